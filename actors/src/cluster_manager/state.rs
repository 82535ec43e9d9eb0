//! The cluster manager's decisions as a pure state machine: events in (a
//! worker registered or was lost, an application asked for executors, a
//! driver or executor exited), actions out (launch this executor on that
//! worker, kill that one, tell a driver it lost an executor, relaunch a
//! supervised driver). Placement follows Spark's standalone master: waiting
//! drivers first, then applications in submission order, executors spread
//! over workers one executor's cores at a time unless told to pack.
//! Drivers together hold at most a share of the cluster's cores
//! (`ember.deploy.maxDriverCoreShare`), so applications always have cores
//! left for executors; submissions beyond it wait, queued, for a driver to end.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

pub type WorkerId = String;
pub type AppId = String;
pub type DriverId = String;
/// An executor's number within its application.
pub type ExecutorNo = u32;

/// Whether executors go over as many workers as possible (Spark's
/// `spreadOut`, the default) or fill one worker before the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    #[default]
    Spread,
    Pack,
}

/// What an application asks for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppRequest {
    pub name: String,
    pub executor_cores: u32,
    pub executor_memory_mb: u64,
    /// `--total-executor-cores`; `None` takes whatever is free.
    pub max_cores: Option<u32>,
    /// The application's settings, handed to its executors.
    #[serde(default)]
    pub conf: Vec<(String, String)>,
    /// The program its executors run, uploaded to the manager beforehand;
    /// `None`: the workers' own `ember` binary.
    #[serde(default)]
    pub binary: Option<crate::binaries::BinaryRef>,
    /// Side files put in every executor's work dir, uploaded to the
    /// manager beforehand.
    #[serde(default)]
    pub files: Vec<crate::binaries::SideFile>,
}

/// What a cluster-mode driver needs from the worker that runs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DriverRequest {
    pub cores: u32,
    pub memory_mb: u64,
    /// Restart it when it exits with a failure.
    pub supervise: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppState {
    /// No executor yet; the reason says what it waits for.
    Waiting(String),
    Running,
    Finished,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverState {
    /// Not placed: no worker has the cores and memory it needs.
    Waiting(String),
    /// Not placed: drivers already hold their share of the cluster's
    /// cores; it starts when one ends.
    Queued(String),
    Running {
        worker: WorkerId,
    },
    /// Exited with a failure; relaunched at `at_ms`.
    Restarting {
        at_ms: u64,
    },
    /// Its worker was lost: the driver may still run (the worker may be
    /// stopped, or cut off from this manager only). Nothing runs in its
    /// place before `until_ms`, by when a driver cut off from the manager
    /// has stopped itself; a worker that comes back before says which.
    Unreachable {
        worker: WorkerId,
        until_ms: u64,
    },
    Finished,
    Failed(String),
    Killed,
}

impl DriverState {
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            DriverState::Finished | DriverState::Failed(_) | DriverState::Killed
        )
    }

    /// Whether it waits to be placed.
    pub fn is_pending(&self) -> bool {
        matches!(self, DriverState::Waiting(_) | DriverState::Queued(_))
    }
}

/// How an executor an application had ended, kept so a finished
/// application still shows what ran where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutorEnd {
    /// Its process exited on its own.
    Exited(String),
    /// Taken back when its application ended.
    Killed,
    /// Its worker was lost, or came back without it.
    Lost(String),
    /// Running when the manager last journaled it, before a restart; not
    /// reported by its worker since.
    Unconfirmed,
}

/// An executor an application no longer has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastExecutor {
    pub worker: WorkerId,
    pub cores: u32,
    pub memory_mb: u64,
    pub end: ExecutorEnd,
}

/// An executor a worker says it runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunningExecutor {
    pub app: AppId,
    pub executor: ExecutorNo,
    pub cores: u32,
    pub memory_mb: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A worker joined (or came back) with this capacity, already running
    /// these drivers and executors.
    WorkerRegistered {
        worker: WorkerId,
        cores: u32,
        memory_mb: u64,
        drivers: Vec<DriverId>,
        executors: Vec<RunningExecutor>,
        /// Drivers it saw exit since it last registered, with exit codes.
        exited_drivers: Vec<(DriverId, Option<i32>)>,
    },
    WorkerLost {
        worker: WorkerId,
        why: String,
    },
    AppRegistered {
        app: AppId,
        request: AppRequest,
        /// The cluster-mode submission whose driver runs it.
        driver: Option<DriverId>,
    },
    /// An unfinished application loaded from the journal after a restart,
    /// with the executors it had (those journaled as running are
    /// [`ExecutorEnd::Unconfirmed`] until their worker reports them).
    AppRecovered {
        app: AppId,
        request: AppRequest,
        driver: Option<DriverId>,
        past: Vec<(ExecutorNo, PastExecutor)>,
    },
    /// Its driver ended or went away.
    AppEnded {
        app: AppId,
        why: Option<String>,
    },
    ExecutorExited {
        app: AppId,
        executor: ExecutorNo,
        why: String,
    },
    DriverSubmitted {
        driver: DriverId,
        request: DriverRequest,
    },
    /// An unfinished submission loaded from the journal after a restart,
    /// with the restarts it had; `running_on` is the worker it was running
    /// on (or last known on) when journaled, where it may still run.
    DriverRecovered {
        driver: DriverId,
        request: DriverRequest,
        restarts: u32,
        running_on: Option<WorkerId>,
    },
    DriverExited {
        driver: DriverId,
        code: Option<i32>,
        /// How it ended, in the worker's words ("killed by signal 9",
        /// "could not start: ...").
        why: String,
        /// The worker it ran on, when the worker says (`None`: taken for
        /// the attempt the manager knows of).
        worker: Option<WorkerId>,
    },
    KillDriver {
        driver: DriverId,
    },
    /// A self-addressed wake-up: restarts that are due now.
    Tick,
    /// The manager restarted and loaded its journal: nothing is placed for
    /// `grace`, so workers can re-register what they still run first (a
    /// driver relaunched before its old worker returned would run twice).
    Recovering {
        grace: Duration,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    LaunchExecutor {
        worker: WorkerId,
        app: AppId,
        executor: ExecutorNo,
        cores: u32,
        memory_mb: u64,
    },
    KillExecutor {
        worker: WorkerId,
        app: AppId,
        executor: ExecutorNo,
    },
    /// Tell the application's driver.
    ExecutorLost {
        app: AppId,
        executor: ExecutorNo,
        why: String,
    },
    LaunchDriver {
        worker: WorkerId,
        driver: DriverId,
        cores: u32,
        memory_mb: u64,
    },
    KillDriver {
        worker: WorkerId,
        driver: DriverId,
    },
    /// Send `Tick` back after this long.
    WakeAfter(Duration),
    /// Tell the application's driver that it failed, so its jobs end.
    AppFailed {
        app: AppId,
        why: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Worker {
    cores: u32,
    memory_mb: u64,
    cores_used: u32,
    memory_used: u64,
    alive: bool,
}

impl Worker {
    fn free_cores(&self) -> u32 {
        self.cores.saturating_sub(self.cores_used)
    }

    fn free_memory(&self) -> u64 {
        self.memory_mb.saturating_sub(self.memory_used)
    }

    fn take(&mut self, cores: u32, memory_mb: u64) {
        debug_assert!(cores <= self.free_cores() && memory_mb <= self.free_memory());
        self.cores_used += cores;
        self.memory_used += memory_mb;
    }

    fn give_back(&mut self, cores: u32, memory_mb: u64) {
        self.cores_used = self.cores_used.saturating_sub(cores);
        self.memory_used = self.memory_used.saturating_sub(memory_mb);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Executor {
    worker: WorkerId,
    cores: u32,
    memory_mb: u64,
    /// Of its cores, those its application's driver holds and lends it:
    /// not taken from the worker a second time.
    borrowed: u32,
}

impl Executor {
    /// Cores it takes from its worker.
    fn own_cores(&self) -> u32 {
        self.cores.saturating_sub(self.borrowed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct App {
    request: AppRequest,
    /// The cluster-mode submission whose driver runs it.
    driver: Option<DriverId>,
    state: AppState,
    executors: BTreeMap<ExecutorNo, Executor>,
    /// Executors it had, and how each ended.
    past: BTreeMap<ExecutorNo, PastExecutor>,
    next_executor: ExecutorNo,
    /// Executors that exited on their own, in a row.
    executor_failures: u32,
}

impl App {
    fn new(request: AppRequest, driver: Option<DriverId>) -> Self {
        Self {
            request,
            driver,
            state: AppState::Waiting("waiting for a worker".into()),
            executors: BTreeMap::new(),
            past: BTreeMap::new(),
            next_executor: 0,
            executor_failures: 0,
        }
    }

    /// Takes executor `n` back, remembering how it ended.
    fn retire(&mut self, n: ExecutorNo, end: ExecutorEnd) -> Option<Executor> {
        let e = self.executors.remove(&n)?;
        self.past.insert(
            n,
            PastExecutor {
                worker: e.worker.clone(),
                cores: e.cores,
                memory_mb: e.memory_mb,
                end,
            },
        );
        Some(e)
    }

    fn cores_granted(&self) -> u32 {
        self.executors.values().map(|e| e.cores).sum()
    }

    fn cores_wanted(&self) -> u32 {
        match self.request.max_cores {
            Some(max) => max.saturating_sub(self.cores_granted()),
            None => u32::MAX,
        }
    }

    fn is_active(&self) -> bool {
        matches!(self.state, AppState::Waiting(_) | AppState::Running)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Driver {
    request: DriverRequest,
    state: DriverState,
    restarts: u32,
}

/// Executors that exit in a row before their application is failed, as
/// Spark's `spark.deploy.maxExecutorRetries`.
pub const MAX_EXECUTOR_FAILURES: u32 = 10;
/// Restarts a supervised driver gets.
pub const MAX_DRIVER_RESTARTS: u32 = 5;
/// How long a driver whose worker was lost may still be running: twice the
/// default `ember.app.clusterLostTimeout`, after which a cluster-mode driver
/// cut off from its manager has stopped itself.
pub const DRIVER_LEASE: Duration = Duration::from_secs(20);
/// The share of the cluster's cores drivers may hold, as
/// `ember.deploy.maxDriverCoreShare` defaults.
pub const DEFAULT_MAX_DRIVER_CORE_SHARE: f64 = 0.5;
/// The first restart's delay; it doubles with each restart.
pub const FIRST_RESTART_DELAY: Duration = Duration::from_secs(1);

/// Everything the cluster manager knows, and its decisions.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    placement: Placement,
    workers: BTreeMap<WorkerId, Worker>,
    /// Applications in the order they registered.
    apps: BTreeMap<AppId, App>,
    app_order: Vec<AppId>,
    drivers: BTreeMap<DriverId, Driver>,
    driver_order: Vec<DriverId>,
    /// Nothing is placed before this time (recovery after a restart).
    hold_until_ms: u64,
    /// Executors of an app that may exit in a row before it fails.
    max_executor_failures: u32,
    /// How long a driver whose worker was lost may still be running.
    driver_lease: Duration,
    /// The share of alive workers' cores running drivers may hold.
    max_driver_core_share: f64,
}

/// A worker as `ember status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    pub id: WorkerId,
    pub cores: u32,
    pub cores_used: u32,
    pub memory_mb: u64,
    pub memory_used: u64,
    pub alive: bool,
}

/// An application as `ember status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppView {
    pub id: AppId,
    pub request: AppRequest,
    pub state: AppState,
    /// (executor number, worker, cores, memory MB)
    pub executors: Vec<(ExecutorNo, WorkerId, u32, u64)>,
    /// The executors it no longer has, by number.
    pub past: Vec<(ExecutorNo, PastExecutor)>,
}

/// A cluster-mode driver as `ember status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverView {
    pub id: DriverId,
    pub request: DriverRequest,
    pub state: DriverState,
    pub restarts: u32,
}

impl ClusterState {
    pub fn workers(&self) -> Vec<WorkerView> {
        self.workers
            .iter()
            .map(|(id, w)| WorkerView {
                id: id.clone(),
                cores: w.cores,
                cores_used: w.cores_used,
                memory_mb: w.memory_mb,
                memory_used: w.memory_used,
                alive: w.alive,
            })
            .collect()
    }

    /// Applications in the order they registered.
    pub fn apps(&self) -> Vec<AppView> {
        self.app_order
            .iter()
            .filter_map(|id| self.apps.get(id).map(|a| (id, a)))
            .map(|(id, a)| AppView {
                id: id.clone(),
                request: a.request.clone(),
                state: a.state.clone(),
                executors: a
                    .executors
                    .iter()
                    .map(|(n, e)| (*n, e.worker.clone(), e.cores, e.memory_mb))
                    .collect(),
                past: a.past.iter().map(|(n, p)| (*n, p.clone())).collect(),
            })
            .collect()
    }

    /// Drivers in the order they were submitted.
    pub fn drivers(&self) -> Vec<DriverView> {
        self.driver_order
            .iter()
            .filter_map(|id| self.drivers.get(id).map(|d| (id, d)))
            .map(|(id, d)| DriverView {
                id: id.clone(),
                request: d.request.clone(),
                state: d.state.clone(),
                restarts: d.restarts,
            })
            .collect()
    }

    /// Whether placement is held back for recovery at `now_ms`.
    pub fn is_recovering(&self, now_ms: u64) -> bool {
        now_ms < self.hold_until_ms
    }
}

impl ClusterState {
    pub fn new(placement: Placement) -> Self {
        Self {
            placement,
            max_executor_failures: MAX_EXECUTOR_FAILURES,
            driver_lease: DRIVER_LEASE,
            max_driver_core_share: DEFAULT_MAX_DRIVER_CORE_SHARE,
            ..Self::default()
        }
    }

    /// Sets the share of the cluster's cores running drivers may hold
    /// together (`ember.deploy.maxDriverCoreShare`), between 0 and 1.
    pub fn with_max_driver_core_share(mut self, share: f64) -> Self {
        self.max_driver_core_share = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            DEFAULT_MAX_DRIVER_CORE_SHARE
        };
        self
    }

    /// Sets how many executors of an application may exit in a row, with
    /// none left, before it fails (`ember.deploy.maxExecutorRetries`).
    pub fn with_max_executor_failures(mut self, max: u32) -> Self {
        self.max_executor_failures = max.max(1);
        self
    }

    /// Sets how long a driver whose worker was lost may still be running:
    /// twice the time a cluster-mode driver cut off from the manager takes
    /// to stop itself (`ember.app.clusterLostTimeout`).
    pub fn with_driver_lease(mut self, lease: Duration) -> Self {
        self.driver_lease = lease;
        self
    }

    pub fn app_state(&self, app: &str) -> Option<&AppState> {
        self.apps.get(app).map(|a| &a.state)
    }

    pub fn driver_state(&self, driver: &str) -> Option<&DriverState> {
        self.drivers.get(driver).map(|d| &d.state)
    }

    /// Where an application's executors run, by executor number.
    pub fn executors_of(&self, app: &str) -> Vec<(ExecutorNo, WorkerId)> {
        self.apps
            .get(app)
            .map(|a| {
                a.executors
                    .iter()
                    .map(|(n, e)| (*n, e.worker.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A worker's (cores used, cores), if it is registered and alive.
    pub fn worker_usage(&self, worker: &str) -> Option<(u32, u32)> {
        self.workers
            .get(worker)
            .filter(|w| w.alive)
            .map(|w| (w.cores_used, w.cores))
    }

    pub fn on_event(&mut self, now_ms: u64, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        match event {
            Event::WorkerRegistered {
                worker,
                cores,
                memory_mb,
                drivers,
                executors,
                exited_drivers,
            } => {
                // Exits the manager did not hear of settle those drivers
                // first: an ended driver is never taken for a lost one.
                for (driver, code) in exited_drivers {
                    let on_this_worker = self.drivers.get(&driver).is_some_and(|d| {
                        matches!(
                            &d.state,
                            DriverState::Running { worker: w } | DriverState::Unreachable { worker: w, .. }
                                if *w == worker
                        )
                    });
                    if on_this_worker && !drivers.contains(&driver) {
                        self.driver_exited(now_ms, &driver, code, "", &mut actions);
                    }
                }
                self.worker_registered(
                    now_ms,
                    worker,
                    cores,
                    memory_mb,
                    drivers,
                    executors,
                    &mut actions,
                )
            }
            Event::WorkerLost { worker, why } => {
                self.worker_lost(now_ms, &worker, &why, &mut actions)
            }
            Event::AppRegistered {
                app,
                request,
                driver,
            } => {
                if !self.apps.contains_key(&app) {
                    self.app_order.push(app.clone());
                    self.apps.insert(app, App::new(request, driver));
                }
            }
            Event::AppRecovered {
                app,
                request,
                driver,
                past,
            } => {
                if !self.apps.contains_key(&app) {
                    let mut recovered = App::new(request, driver);
                    // Numbers are never handed out twice: a driver would
                    // take a new executor for an old one.
                    recovered.next_executor = past.iter().map(|(n, _)| n + 1).max().unwrap_or(0);
                    recovered.past = past.into_iter().collect();
                    self.app_order.push(app.clone());
                    self.apps.insert(app, recovered);
                }
            }
            Event::AppEnded { app, why } => {
                let state = match why {
                    None => AppState::Finished,
                    Some(why) => AppState::Failed(why),
                };
                self.end_app(&app, state, &mut actions);
            }
            Event::ExecutorExited { app, executor, why } => {
                self.executor_exited(&app, executor, why, &mut actions)
            }
            Event::DriverSubmitted { driver, request } => {
                if !self.drivers.contains_key(&driver) {
                    self.driver_order.push(driver.clone());
                    self.drivers.insert(
                        driver,
                        Driver {
                            request,
                            state: DriverState::Waiting("waiting for a worker".into()),
                            restarts: 0,
                        },
                    );
                }
            }
            Event::DriverRecovered {
                driver,
                request,
                restarts,
                running_on,
            } => {
                if !self.drivers.contains_key(&driver) {
                    let state = match running_on {
                        // Never two copies of one driver: as for a worker
                        // lost, nothing replaces it before its lease runs
                        // out, unless its worker says first how it stands.
                        Some(worker) => {
                            let lease = self.driver_lease;
                            actions.push(Action::WakeAfter(lease));
                            DriverState::Unreachable {
                                worker,
                                until_ms: now_ms
                                    + u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
                            }
                        }
                        None => DriverState::Waiting("waiting for a worker".into()),
                    };
                    self.driver_order.push(driver.clone());
                    self.drivers.insert(
                        driver,
                        Driver {
                            request,
                            state,
                            restarts,
                        },
                    );
                }
            }
            Event::DriverExited {
                driver,
                code,
                why,
                worker,
            } => {
                // The exit of an attempt given away, killed on the worker
                // that ran it, is not the exit of the one running now.
                let elsewhere = worker.is_some_and(|from| {
                    self.drivers.get(&driver).is_some_and(|d| match &d.state {
                        DriverState::Running { worker: w }
                        | DriverState::Unreachable { worker: w, .. } => *w != from,
                        _ => false,
                    })
                });
                if !elsewhere {
                    self.driver_exited(now_ms, &driver, code, &why, &mut actions)
                }
            }
            Event::KillDriver { driver } => self.kill_driver(&driver, &mut actions),
            Event::Tick => self.restart_due_drivers(now_ms),
            Event::Recovering { grace } => {
                self.hold_until_ms = now_ms + u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
                actions.push(Action::WakeAfter(grace));
            }
        }
        if now_ms >= self.hold_until_ms {
            self.schedule(&mut actions);
        }
        self.assert_invariants();
        actions
    }

    /// A worker joined, or came back (after a disconnect or a restart of
    /// the cluster manager) saying what it still runs. What it runs and is
    /// still wanted is kept; what it runs but was given away or ended while
    /// it was gone is killed, so no driver ever runs twice; what it was
    /// given but no longer runs has ended.
    #[allow(clippy::too_many_arguments)]
    fn worker_registered(
        &mut self,
        now_ms: u64,
        id: WorkerId,
        cores: u32,
        memory_mb: u64,
        running_drivers: Vec<DriverId>,
        running_executors: Vec<RunningExecutor>,
        actions: &mut Vec<Action>,
    ) {
        let gone = format!("worker {id} no longer runs it");
        for (app_id, app) in &mut self.apps {
            let ended: Vec<ExecutorNo> = app
                .executors
                .iter()
                .filter(|(n, e)| {
                    e.worker == id
                        && !running_executors
                            .iter()
                            .any(|r| &r.app == app_id && r.executor == **n)
                })
                .map(|(n, _)| *n)
                .collect();
            for executor in ended {
                app.retire(executor, ExecutorEnd::Lost(gone.clone()));
                if app.is_active() {
                    actions.push(Action::ExecutorLost {
                        app: app_id.clone(),
                        executor,
                        why: gone.clone(),
                    });
                }
            }
        }
        for (driver_id, driver) in &mut self.drivers {
            let here = matches!(
                &driver.state,
                DriverState::Running { worker } | DriverState::Unreachable { worker, .. }
                    if worker == &id
            );
            if here && !running_drivers.contains(driver_id) {
                driver.state = if driver.request.supervise {
                    DriverState::Restarting { at_ms: now_ms }
                } else {
                    DriverState::Failed(gone.clone())
                };
            }
        }

        let mut worker = Worker {
            cores,
            memory_mb,
            cores_used: 0,
            memory_used: 0,
            alive: true,
        };
        for driver_id in running_drivers {
            let keep = self.drivers.get_mut(&driver_id).filter(|d| {
                let ours = match &d.state {
                    DriverState::Running { worker } | DriverState::Unreachable { worker, .. } => {
                        worker == &id
                    }
                    // Recovered from the journal before its worker returned.
                    DriverState::Waiting(_) | DriverState::Queued(_) => true,
                    _ => false,
                };
                ours && d.request.cores <= worker.free_cores()
                    && d.request.memory_mb <= worker.free_memory()
            });
            match keep {
                Some(d) => {
                    worker.take(d.request.cores, d.request.memory_mb);
                    d.state = DriverState::Running { worker: id.clone() };
                }
                None => actions.push(Action::KillDriver {
                    worker: id.clone(),
                    driver: driver_id,
                }),
            }
        }
        for r in running_executors {
            let fits = r.cores <= worker.free_cores() && r.memory_mb <= worker.free_memory();
            let app = self.apps.get_mut(&r.app).filter(|a| a.is_active());
            // Keep what is recorded here, or what this manager never heard
            // of or last saw before it restarted; a number it handed out
            // and then lost was already reported lost to the driver.
            let keep = app.filter(|a| match a.executors.get(&r.executor) {
                Some(e) => e.worker == id && fits,
                None => {
                    let unconfirmed = a
                        .past
                        .get(&r.executor)
                        .is_some_and(|p| p.end == ExecutorEnd::Unconfirmed);
                    (r.executor >= a.next_executor || unconfirmed)
                        && a.cores_wanted() >= r.cores
                        && fits
                }
            });
            match keep {
                Some(app) => {
                    worker.take(r.cores, r.memory_mb);
                    app.past.remove(&r.executor);
                    app.next_executor = app.next_executor.max(r.executor + 1);
                    app.state = AppState::Running;
                    app.executors.insert(
                        r.executor,
                        Executor {
                            worker: id.clone(),
                            cores: r.cores,
                            memory_mb: r.memory_mb,
                            borrowed: 0,
                        },
                    );
                }
                None => actions.push(Action::KillExecutor {
                    worker: id.clone(),
                    app: r.app,
                    executor: r.executor,
                }),
            }
        }
        self.workers.insert(id, worker);
        self.restart_due_drivers(now_ms);
    }

    /// A worker stopped answering, or never came back after a restart of
    /// the cluster manager.
    fn worker_lost(&mut self, now_ms: u64, id: &str, why: &str, actions: &mut Vec<Action>) {
        if let Some(worker) = self.workers.get_mut(id) {
            worker.alive = false;
            worker.cores_used = 0;
            worker.memory_used = 0;
        }
        let why = format!("worker {id} lost: {why}");
        for (app_id, app) in &mut self.apps {
            let lost: Vec<ExecutorNo> = app
                .executors
                .iter()
                .filter(|(_, e)| e.worker == id)
                .map(|(n, _)| *n)
                .collect();
            for executor in lost {
                app.retire(executor, ExecutorEnd::Lost(why.clone()));
                if app.is_active() {
                    actions.push(Action::ExecutorLost {
                        app: app_id.clone(),
                        executor,
                        why: why.clone(),
                    });
                }
            }
        }
        let lease = self.driver_lease;
        let mut waiting = false;
        for driver in self.drivers.values_mut() {
            if matches!(&driver.state, DriverState::Running { worker } if worker == id) {
                // Never two copies of one driver: it is relaunched (or
                // given up) only once it cannot be running any more.
                driver.state = DriverState::Unreachable {
                    worker: id.to_string(),
                    until_ms: now_ms + u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
                };
                waiting = true;
            }
        }
        if waiting {
            actions.push(Action::WakeAfter(lease));
        }
        self.restart_due_drivers(now_ms);
    }

    fn end_app(&mut self, id: &str, state: AppState, actions: &mut Vec<Action>) {
        let Some(app) = self.apps.get_mut(id) else {
            return;
        };
        if !app.is_active() {
            return;
        }
        app.state = state;
        let executors: Vec<ExecutorNo> = app.executors.keys().copied().collect();
        for executor in executors {
            let Some(e) = app.retire(executor, ExecutorEnd::Killed) else {
                continue;
            };
            if let Some(worker) = self.workers.get_mut(&e.worker) {
                worker.give_back(e.own_cores(), e.memory_mb);
                if worker.alive {
                    actions.push(Action::KillExecutor {
                        worker: e.worker.clone(),
                        app: id.to_string(),
                        executor,
                    });
                }
            }
        }
    }

    fn executor_exited(
        &mut self,
        app_id: &str,
        executor: ExecutorNo,
        why: String,
        actions: &mut Vec<Action>,
    ) {
        let Some(app) = self.apps.get_mut(app_id) else {
            return;
        };
        let Some(e) = app.retire(executor, ExecutorEnd::Exited(why.clone())) else {
            return;
        };
        if let Some(worker) = self.workers.get_mut(&e.worker) {
            worker.give_back(e.own_cores(), e.memory_mb);
        }
        if !app.is_active() {
            return;
        }
        actions.push(Action::ExecutorLost {
            app: app_id.to_string(),
            executor,
            why: why.clone(),
        });
        app.executor_failures += 1;
        let max = self.max_executor_failures;
        if app.executor_failures >= max && app.executors.is_empty() {
            let why = format!(
                "{max} executors in a row exited on their own (ember.deploy.maxExecutorRetries); the last: {why}"
            );
            self.end_app(app_id, AppState::Failed(why.clone()), actions);
            actions.push(Action::AppFailed {
                app: app_id.to_string(),
                why,
            });
        }
    }

    fn driver_exited(
        &mut self,
        now_ms: u64,
        id: &str,
        code: Option<i32>,
        why: &str,
        actions: &mut Vec<Action>,
    ) {
        let Some(driver) = self.drivers.get_mut(id) else {
            return;
        };
        // Its exit may be heard late, from a worker the manager had lost.
        let (DriverState::Running { worker } | DriverState::Unreachable { worker, .. }) =
            &driver.state
        else {
            return;
        };
        if let Some(w) = self.workers.get_mut(worker) {
            w.give_back(driver.request.cores, driver.request.memory_mb);
        }
        driver.state = match code {
            Some(0) => DriverState::Finished,
            _ if driver.request.supervise && driver.restarts < MAX_DRIVER_RESTARTS => {
                let delay = FIRST_RESTART_DELAY * 2u32.saturating_pow(driver.restarts);
                actions.push(Action::WakeAfter(delay));
                DriverState::Restarting {
                    at_ms: now_ms + u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                }
            }
            Some(code) => DriverState::Failed(format!("exited with code {code}")),
            None if why.is_empty() => DriverState::Failed("killed by a signal".into()),
            None => DriverState::Failed(why.to_string()),
        };
    }

    fn kill_driver(&mut self, id: &str, actions: &mut Vec<Action>) {
        let Some(driver) = self.drivers.get_mut(id) else {
            return;
        };
        if let DriverState::Running { worker } = &driver.state {
            actions.push(Action::KillDriver {
                worker: worker.clone(),
                driver: id.to_string(),
            });
            if let Some(w) = self.workers.get_mut(worker) {
                w.give_back(driver.request.cores, driver.request.memory_mb);
            }
        }
        if !driver.state.is_final() {
            driver.state = DriverState::Killed;
        }
    }

    fn restart_due_drivers(&mut self, now_ms: u64) {
        for driver in self.drivers.values_mut() {
            if let DriverState::Unreachable { worker, until_ms } = &driver.state
                && *until_ms <= now_ms
            {
                let why = format!("its worker {worker} was lost and did not come back");
                driver.state = if driver.request.supervise {
                    DriverState::Restarting { at_ms: now_ms }
                } else {
                    DriverState::Failed(why)
                };
            }
            if matches!(driver.state, DriverState::Restarting { at_ms } if at_ms <= now_ms) {
                driver.restarts += 1;
                driver.state = DriverState::Waiting("waiting to be relaunched".into());
            }
        }
    }

    /// Alive workers by placement preference: most free cores first, then
    /// by id, so the order is the same on every run.
    fn usable_workers(&self) -> Vec<WorkerId> {
        let mut usable: Vec<(&WorkerId, &Worker)> =
            self.workers.iter().filter(|(_, w)| w.alive).collect();
        usable.sort_by(|(a, wa), (b, wb)| wb.free_cores().cmp(&wa.free_cores()).then(a.cmp(b)));
        usable.into_iter().map(|(id, _)| id.clone()).collect()
    }

    fn schedule(&mut self, actions: &mut Vec<Action>) {
        for id in self.driver_order.clone() {
            self.place_driver(&id, actions);
        }
        for id in self.app_order.clone() {
            self.place_executors(&id, actions);
        }
    }

    /// Cores of alive workers: (all of them, those running drivers hold,
    /// the most drivers may hold).
    fn driver_cores(&self) -> (u32, u32, u32) {
        let total: u32 = self
            .workers
            .values()
            .filter(|w| w.alive)
            .map(|w| w.cores)
            .sum();
        let held: u32 = self
            .drivers
            .values()
            .filter_map(|d| match &d.state {
                DriverState::Running { worker }
                    if self.workers.get(worker).is_some_and(|w| w.alive) =>
                {
                    Some(d.request.cores)
                }
                _ => None,
            })
            .sum();
        // Truncated: a share of 0.5 of 3 cores lets drivers hold 1.
        let cap = (f64::from(total) * self.max_driver_core_share).floor() as u32;
        (total, held, cap)
    }

    /// Why a driver needing `cores` may not start now although a worker may
    /// have room: drivers hold their share of the cores already. The first
    /// driver always may, whatever its size, so that a cluster too small for
    /// the share (one core) still runs cluster-mode jobs.
    fn driver_share_exceeded(&self, cores: u32) -> Option<String> {
        if self.max_driver_core_share >= 1.0 {
            return None;
        }
        let (total, held, cap) = self.driver_cores();
        if held == 0 || held.saturating_add(cores) <= cap {
            return None;
        }
        // Worded without the count held now, which changes at every
        // driver's start and end, so queued records are not rewritten then.
        Some(format!(
            "queued: running drivers already hold their share of the cores, at most {cap} \
             of the cluster's {total} (ember.deploy.maxDriverCoreShare = {share}), so that \
             their applications get executors; it starts when a driver ends",
            share = self.max_driver_core_share
        ))
    }

    fn place_driver(&mut self, id: &str, actions: &mut Vec<Action>) {
        let Some(driver) = self.drivers.get(id) else {
            return;
        };
        if !driver.state.is_pending() {
            return;
        }
        let (cores, memory_mb) = (driver.request.cores, driver.request.memory_mb);
        if let Some(why) = self.driver_share_exceeded(cores) {
            if let Some(driver) = self.drivers.get_mut(id) {
                driver.state = DriverState::Queued(why);
            }
            return;
        }
        let chosen = self.usable_workers().into_iter().find(|w| {
            self.workers
                .get(w)
                .is_some_and(|w| w.free_cores() >= cores && w.free_memory() >= memory_mb)
        });
        let state = match chosen {
            Some(worker) => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.take(cores, memory_mb);
                }
                actions.push(Action::LaunchDriver {
                    worker: worker.clone(),
                    driver: id.to_string(),
                    cores,
                    memory_mb,
                });
                DriverState::Running { worker }
            }
            None => DriverState::Waiting(self.shortage(cores, memory_mb, "the driver")),
        };
        if let Some(driver) = self.drivers.get_mut(id) {
            driver.state = state;
        }
    }

    /// Spark's `scheduleExecutorsOnWorkers`: hand out one executor's cores
    /// at a time, moving to the next worker after each (spread) or staying
    /// on a worker until it is full (pack).
    fn place_executors(&mut self, id: &str, actions: &mut Vec<Action>) {
        let Some(app) = self.apps.get(id) else {
            return;
        };
        if !app.is_active() {
            return;
        }
        let per_cores = app.request.executor_cores.max(1);
        let per_memory = app.request.executor_memory_mb;
        let mut wanted = app.cores_wanted();
        let workers: Vec<WorkerId> = self
            .usable_workers()
            .into_iter()
            .filter(|w| {
                self.workers
                    .get(w)
                    .is_some_and(|w| w.free_cores() >= per_cores && w.free_memory() >= per_memory)
            })
            .collect();
        let mut placed: Vec<u32> = vec![0; workers.len()];
        let fits = |i: usize, placed: &[u32], state: &ClusterState| {
            state.workers.get(&workers[i]).is_some_and(|w| {
                let n = u64::from(placed[i]);
                w.free_cores() >= (placed[i] + 1) * per_cores
                    && w.free_memory() >= (n + 1) * per_memory
            })
        };
        let mut progress = true;
        while wanted >= per_cores && progress {
            progress = false;
            for i in 0..workers.len() {
                while wanted >= per_cores && fits(i, &placed, self) {
                    placed[i] += 1;
                    wanted -= per_cores;
                    progress = true;
                    if self.placement == Placement::Spread {
                        break;
                    }
                }
            }
        }
        let Some(app) = self.apps.get_mut(id) else {
            return;
        };
        for (i, count) in placed.into_iter().enumerate() {
            for _ in 0..count {
                let executor = app.next_executor;
                app.next_executor += 1;
                let worker = workers[i].clone();
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.take(per_cores, per_memory);
                }
                app.executors.insert(
                    executor,
                    Executor {
                        worker: worker.clone(),
                        cores: per_cores,
                        memory_mb: per_memory,
                        borrowed: 0,
                    },
                );
                actions.push(Action::LaunchExecutor {
                    worker,
                    app: id.to_string(),
                    executor,
                    cores: per_cores,
                    memory_mb: per_memory,
                });
            }
        }
        if app.executors.is_empty() && !self.borrow_driver_cores(id, actions) {
            let why = self.shortage(per_cores, per_memory, "each executor");
            if let Some(app) = self.apps.get_mut(id) {
                app.state = AppState::Waiting(why);
            }
        } else if let Some(app) = self.apps.get_mut(id) {
            app.state = AppState::Running;
        }
    }

    /// On a cluster where no executor can ever run beside the drivers (one
    /// core, held by the one driver the share still lets in), an
    /// application would wait for ever: its own driver lends it the cores
    /// it holds for one executor instead. Whether an executor was placed.
    fn borrow_driver_cores(&mut self, id: &str, actions: &mut Vec<Action>) -> bool {
        let Some(app) = self.apps.get(id) else {
            return false;
        };
        let per_cores = app.request.executor_cores.max(1);
        let per_memory = app.request.executor_memory_mb;
        if app.cores_wanted() < per_cores {
            return false;
        }
        let Some((home, lent)) = app
            .driver
            .as_ref()
            .and_then(|d| self.drivers.get(d))
            .and_then(|d| match &d.state {
                DriverState::Running { worker } => Some((worker.clone(), d.request.cores)),
                _ => None,
            })
        else {
            return false;
        };
        let mut driver_cores: BTreeMap<&str, u32> = BTreeMap::new();
        for d in self.drivers.values() {
            if let DriverState::Running { worker } = &d.state {
                *driver_cores.entry(worker.as_str()).or_default() += d.request.cores;
            }
        }
        // Only where waiting cannot help: no worker could host one executor
        // even once every application's executors are gone.
        let never_fits = self
            .workers
            .iter()
            .filter(|(_, w)| w.alive)
            .all(|(wid, w)| {
                let beside = w
                    .cores
                    .saturating_sub(driver_cores.get(wid.as_str()).copied().unwrap_or(0));
                beside < per_cores || w.memory_mb < per_memory
            });
        let borrowed = lent.min(per_cores);
        let own = per_cores - borrowed;
        let fits = self
            .workers
            .get(&home)
            .is_some_and(|w| w.alive && w.free_cores() >= own && w.free_memory() >= per_memory);
        if !never_fits || !fits {
            return false;
        }
        let Some(app) = self.apps.get_mut(id) else {
            return false;
        };
        let executor = app.next_executor;
        app.next_executor += 1;
        app.executors.insert(
            executor,
            Executor {
                worker: home.clone(),
                cores: per_cores,
                memory_mb: per_memory,
                borrowed,
            },
        );
        if let Some(w) = self.workers.get_mut(&home) {
            w.take(own, per_memory);
        }
        actions.push(Action::LaunchExecutor {
            worker: home,
            app: id.to_string(),
            executor,
            cores: per_cores,
            memory_mb: per_memory,
        });
        true
    }

    /// Why something needing `cores` and `memory_mb` cannot be placed.
    fn shortage(&self, cores: u32, memory_mb: u64, what: &str) -> String {
        let alive: Vec<&Worker> = self.workers.values().filter(|w| w.alive).collect();
        if alive.is_empty() {
            return "waiting for a worker to register".into();
        }
        let most_cores = alive.iter().map(|w| w.cores).max().unwrap_or(0);
        let most_memory = alive.iter().map(|w| w.memory_mb).max().unwrap_or(0);
        if cores > most_cores || memory_mb > most_memory {
            return format!(
                "{what} needs {cores} cores and {memory_mb} MB, but the largest worker has \
                 {most_cores} cores and {most_memory} MB: ask for less or add a bigger worker"
            );
        }
        format!(
            "waiting for resources: {what} needs {cores} cores and {memory_mb} MB free on one \
             worker; all {} workers are busy",
            alive.len()
        )
    }

    /// Resources handed out never exceed what a worker has, and match what
    /// is recorded against it.
    fn assert_invariants(&self) {
        if cfg!(debug_assertions) {
            let mut used: BTreeMap<&str, (u32, u64)> = BTreeMap::new();
            for app in self.apps.values() {
                for e in app.executors.values() {
                    let u = used.entry(e.worker.as_str()).or_default();
                    u.0 += e.own_cores();
                    u.1 += e.memory_mb;
                }
            }
            for d in self.drivers.values() {
                if let DriverState::Running { worker } = &d.state {
                    let u = used.entry(worker.as_str()).or_default();
                    u.0 += d.request.cores;
                    u.1 += d.request.memory_mb;
                }
            }
            for (id, w) in &self.workers {
                if w.alive {
                    let (cores, memory) = used.get(id.as_str()).copied().unwrap_or_default();
                    debug_assert_eq!((w.cores_used, w.memory_used), (cores, memory), "{id}");
                    debug_assert!(w.cores_used <= w.cores && w.memory_used <= w.memory_mb);
                }
            }
        }
    }
}

impl fmt::Display for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppState::Waiting(why) => write!(f, "WAITING ({why})"),
            AppState::Running => f.write_str("RUNNING"),
            AppState::Finished => f.write_str("FINISHED"),
            AppState::Failed(why) => write!(f, "FAILED ({why})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: &str, cores: u32, memory_mb: u64) -> Event {
        Event::WorkerRegistered {
            worker: id.into(),
            cores,
            memory_mb,
            drivers: vec![],
            executors: vec![],
            exited_drivers: vec![],
        }
    }

    fn app(id: &str, executor_cores: u32, max_cores: Option<u32>) -> Event {
        Event::AppRegistered {
            app: id.into(),
            request: AppRequest {
                name: id.into(),
                executor_cores,
                executor_memory_mb: 512,
                max_cores,
                conf: vec![],
                binary: None,
                files: vec![],
            },
            driver: None,
        }
    }

    /// The application a cluster-mode driver registers.
    fn app_of(driver: &str, max_cores: Option<u32>) -> Event {
        let Event::AppRegistered { request, .. } = app(&format!("app-{driver}"), 1, max_cores)
        else {
            unreachable!()
        };
        Event::AppRegistered {
            app: format!("app-{driver}"),
            request,
            driver: Some(driver.into()),
        }
    }

    fn running_driver_cores(s: &ClusterState) -> u32 {
        s.drivers()
            .iter()
            .filter(|d| matches!(d.state, DriverState::Running { .. }))
            .map(|d| d.request.cores)
            .sum()
    }

    #[test]
    fn drivers_hold_at_most_their_share_and_later_submissions_queue() {
        let mut s = two_workers(Placement::Spread);
        for n in 0..30 {
            s.on_event(0, driver(&format!("d{n:02}"), false));
        }
        // Half of 4 cores: two drivers run, the rest wait in order.
        assert_eq!(running_driver_cores(&s), 2);
        let queued = s
            .drivers()
            .into_iter()
            .filter(|d| matches!(&d.state, DriverState::Queued(why) if why.contains("ember.deploy.maxDriverCoreShare")))
            .count();
        assert_eq!(queued, 28);
        assert!(matches!(
            s.driver_state("d00"),
            Some(DriverState::Running { .. })
        ));
        assert!(matches!(
            s.driver_state("d01"),
            Some(DriverState::Running { .. })
        ));

        // Every driver that runs gets executors for its application, and
        // each one that ends lets the next in.
        let mut now = 0;
        let mut finished = 0;
        while finished < 30 {
            now += 1;
            let running: Vec<String> = s
                .drivers()
                .into_iter()
                .filter(|d| matches!(d.state, DriverState::Running { .. }))
                .map(|d| d.id)
                .collect();
            assert!(!running.is_empty(), "nothing runs at step {now}");
            let d = &running[0];
            s.on_event(now, app_of(d, Some(1)));
            assert_eq!(
                s.app_state(&format!("app-{d}")),
                Some(&AppState::Running),
                "{d}'s application got an executor"
            );
            assert!(running_driver_cores(&s) <= 2);
            s.on_event(
                now,
                Event::AppEnded {
                    app: format!("app-{d}"),
                    why: None,
                },
            );
            s.on_event(
                now,
                Event::DriverExited {
                    driver: d.clone(),
                    code: Some(0),
                    why: String::new(),
                    worker: None,
                },
            );
            finished += 1;
        }
        assert!(s.drivers().iter().all(|d| d.state == DriverState::Finished));
        assert_eq!(s.worker_usage("w1"), Some((0, 2)));
        assert_eq!(s.worker_usage("w2"), Some((0, 2)));
    }

    #[test]
    fn a_share_of_one_lets_drivers_take_every_core() {
        let mut s = two_workers(Placement::Spread).with_max_driver_core_share(1.0);
        for n in 0..6 {
            s.on_event(0, driver(&format!("d{n}"), false));
        }
        assert_eq!(running_driver_cores(&s), 4);
        assert!(
            matches!(s.driver_state("d5"), Some(DriverState::Waiting(why)) if why.contains("busy")),
            "{:?}",
            s.driver_state("d5")
        );
    }

    #[test]
    fn a_driver_needing_more_than_the_share_runs_when_no_other_does() {
        let mut s = two_workers(Placement::Spread);
        let big = |id: &str| Event::DriverSubmitted {
            driver: id.into(),
            request: DriverRequest {
                cores: 2,
                memory_mb: 1024,
                supervise: false,
            },
        };
        s.on_event(0, driver("small", false));
        s.on_event(0, big("big"));
        // One core held, two more would pass the share of 2.
        assert!(matches!(
            s.driver_state("big"),
            Some(DriverState::Queued(_))
        ));
        s.on_event(
            1,
            Event::DriverExited {
                driver: "small".into(),
                code: Some(0),
                why: String::new(),
                worker: None,
            },
        );
        assert!(matches!(
            s.driver_state("big"),
            Some(DriverState::Running { .. })
        ));
    }

    #[test]
    fn on_a_one_core_cluster_the_driver_lends_its_core_to_its_application() {
        let mut s = ClusterState::new(Placement::Spread);
        s.on_event(0, worker("w1", 1, 4096));
        s.on_event(0, driver("d1", false));
        s.on_event(0, driver("d2", false));
        assert!(matches!(
            s.driver_state("d1"),
            Some(DriverState::Running { .. })
        ));
        assert!(matches!(s.driver_state("d2"), Some(DriverState::Queued(_))));
        // Another application is not lent anything.
        assert!(launches(&s.on_event(1, app("stranger", 1, None))).is_empty());
        let actions = s.on_event(2, app_of("d1", None));
        assert_eq!(launches(&actions), vec![("w1".into(), "app-d1".into(), 0)]);
        assert_eq!(s.app_state("app-d1"), Some(&AppState::Running));
        assert_eq!(
            s.worker_usage("w1"),
            Some((1, 1)),
            "the core is counted once"
        );
        s.on_event(
            3,
            Event::AppEnded {
                app: "app-d1".into(),
                why: None,
            },
        );
        let actions = s.on_event(
            3,
            Event::DriverExited {
                driver: "d1".into(),
                code: Some(0),
                why: String::new(),
                worker: None,
            },
        );
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::LaunchDriver { driver, .. } if driver == "d2")),
            "{actions:?}"
        );
        assert_eq!(
            launches(&s.on_event(4, app_of("d2", None))),
            vec![("w1".into(), "app-d2".into(), 0)]
        );
    }

    #[test]
    fn a_driver_lends_nothing_where_waiting_frees_a_core() {
        let mut s = ClusterState::new(Placement::Spread);
        s.on_event(0, worker("w1", 2, 4096));
        s.on_event(0, driver("d1", false));
        s.on_event(0, app("other", 1, None));
        assert!(launches(&s.on_event(1, app_of("d1", None))).is_empty());
        assert!(
            matches!(s.app_state("app-d1"), Some(AppState::Waiting(why)) if why.contains("busy"))
        );
        let actions = s.on_event(
            2,
            Event::AppEnded {
                app: "other".into(),
                why: None,
            },
        );
        assert_eq!(launches(&actions), vec![("w1".into(), "app-d1".into(), 0)]);
    }

    fn launches(actions: &[Action]) -> Vec<(String, String, ExecutorNo)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::LaunchExecutor {
                    worker,
                    app,
                    executor,
                    ..
                } => Some((worker.clone(), app.clone(), *executor)),
                _ => None,
            })
            .collect()
    }

    fn two_workers(placement: Placement) -> ClusterState {
        let mut s = ClusterState::new(placement);
        s.on_event(0, worker("w1", 2, 4096));
        s.on_event(0, worker("w2", 2, 4096));
        s
    }

    #[test]
    fn executors_spread_over_workers_by_default() {
        let mut s = two_workers(Placement::Spread);
        let actions = s.on_event(0, app("a", 1, Some(2)));
        assert_eq!(
            launches(&actions),
            vec![("w1".into(), "a".into(), 0), ("w2".into(), "a".into(), 1)]
        );
        assert_eq!(s.app_state("a"), Some(&AppState::Running));
    }

    #[test]
    fn pack_fills_one_worker_first() {
        let mut s = two_workers(Placement::Pack);
        let actions = s.on_event(0, app("a", 1, Some(2)));
        assert_eq!(
            launches(&actions),
            vec![("w1".into(), "a".into(), 0), ("w1".into(), "a".into(), 1)]
        );
    }

    #[test]
    fn without_a_core_limit_an_app_takes_every_free_core() {
        let mut s = two_workers(Placement::Spread);
        assert_eq!(launches(&s.on_event(0, app("a", 1, None))).len(), 4);
        assert_eq!(s.worker_usage("w1"), Some((2, 2)));
        assert_eq!(s.worker_usage("w2"), Some((2, 2)));
    }

    #[test]
    fn memory_limits_executors_too() {
        let mut s = ClusterState::new(Placement::Spread);
        s.on_event(0, worker("w1", 4, 1024));
        let actions = s.on_event(0, app("a", 1, None));
        assert_eq!(
            launches(&actions).len(),
            2,
            "two 512 MB executors fit in 1 GB"
        );
    }

    #[test]
    fn an_app_that_cannot_fit_waits_and_says_why() {
        let mut s = ClusterState::new(Placement::Spread);
        assert!(launches(&s.on_event(0, app("a", 4, None))).is_empty());
        assert!(
            matches!(s.app_state("a"), Some(AppState::Waiting(why)) if why.contains("worker to register"))
        );
        s.on_event(0, worker("small", 2, 4096));
        let state = s.app_state("a").unwrap().to_string();
        assert!(
            state.contains("needs 4 cores") && state.contains("largest worker has 2 cores"),
            "{state}"
        );
        let actions = s.on_event(0, worker("big", 8, 8192));
        assert_eq!(
            launches(&actions),
            vec![("big".into(), "a".into(), 0), ("big".into(), "a".into(), 1)]
        );
    }

    #[test]
    fn apps_are_served_in_order_and_a_finished_one_frees_its_cores() {
        let mut s = two_workers(Placement::Spread);
        s.on_event(0, app("first", 1, None));
        assert!(launches(&s.on_event(0, app("second", 1, Some(2)))).is_empty());
        assert!(
            matches!(s.app_state("second"), Some(AppState::Waiting(why)) if why.contains("busy"))
        );
        let actions = s.on_event(
            0,
            Event::AppEnded {
                app: "first".into(),
                why: None,
            },
        );
        let kills = actions
            .iter()
            .filter(|a| matches!(a, Action::KillExecutor { app, .. } if app == "first"))
            .count();
        assert_eq!(kills, 4, "every executor of the ended app is killed");
        assert_eq!(launches(&actions).len(), 2);
        assert_eq!(s.app_state("first"), Some(&AppState::Finished));
        assert_eq!(s.app_state("second"), Some(&AppState::Running));
        // Ending it again changes nothing.
        let again = s.on_event(
            0,
            Event::AppEnded {
                app: "first".into(),
                why: None,
            },
        );
        assert!(again.is_empty());
    }

    fn driver(id: &str, supervise: bool) -> Event {
        Event::DriverSubmitted {
            driver: id.into(),
            request: DriverRequest {
                cores: 1,
                memory_mb: 1024,
                supervise,
            },
        }
    }

    #[test]
    fn a_driver_waits_for_a_worker_and_its_core_is_not_given_to_executors() {
        let mut s = ClusterState::new(Placement::Spread);
        assert!(s.on_event(0, driver("d", false)).is_empty());
        let actions = s.on_event(0, worker("w1", 2, 4096));
        assert!(actions.contains(&Action::LaunchDriver {
            worker: "w1".into(),
            driver: "d".into(),
            cores: 1,
            memory_mb: 1024,
        }));
        assert_eq!(launches(&s.on_event(0, app("a", 1, None))).len(), 1);
        assert_eq!(s.worker_usage("w1"), Some((2, 2)));
    }

    #[test]
    fn a_lost_worker_reports_its_executors_and_relaunches_supervised_drivers() {
        let mut s = ClusterState::new(Placement::Spread);
        s.on_event(0, worker("w1", 2, 4096));
        s.on_event(0, driver("kept", true));
        s.on_event(0, worker("w2", 4, 4096));
        s.on_event(0, driver("plain", false));
        s.on_event(0, app("a", 1, Some(2)));
        let on = |s: &ClusterState, d: &str, w: &str| {
            s.driver_state(d) == Some(&DriverState::Running { worker: w.into() })
        };
        assert!(on(&s, "kept", "w1"), "{:?}", s.driver_state("kept"));
        assert!(on(&s, "plain", "w2"), "{:?}", s.driver_state("plain"));
        assert_eq!(
            s.executors_of("a"),
            vec![(0, "w2".to_string()), (1, "w1".to_string())]
        );

        let actions = s.on_event(
            5,
            Event::WorkerLost {
                worker: "w1".into(),
                why: "silent".into(),
            },
        );
        let lost: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::ExecutorLost { executor, why, .. } => Some((*executor, why.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].0, 1);
        assert!(lost[0].1.contains("worker w1 lost"));
        // The driver may still run on the lost worker: nothing replaces it
        // before its lease has run out.
        let launched = |actions: &[Action]| {
            actions.contains(&Action::LaunchDriver {
                worker: "w2".into(),
                driver: "kept".into(),
                cores: 1,
                memory_mb: 1024,
            })
        };
        assert!(!launched(&actions), "{actions:?}");
        assert!(actions.contains(&Action::WakeAfter(DRIVER_LEASE)));
        assert!(matches!(
            s.driver_state("kept"),
            Some(DriverState::Unreachable { .. })
        ));
        let lease = DRIVER_LEASE.as_millis() as u64;
        assert!(!launched(&s.on_event(5 + lease - 1, Event::Tick)));
        assert!(launched(&s.on_event(5 + lease, Event::Tick)));
        assert_eq!(s.worker_usage("w1"), None);
        assert_eq!(s.worker_usage("w2"), Some((4, 4)));
        assert!(on(&s, "plain", "w2"), "a driver elsewhere is untouched");
    }

    #[test]
    fn a_driver_whose_worker_returns_within_its_lease_keeps_running_there() {
        let mut s = ClusterState::new(Placement::Spread);
        s.on_event(0, worker("w1", 2, 4096));
        s.on_event(0, driver("d", true));
        s.on_event(0, worker("w2", 2, 4096));
        s.on_event(
            10,
            Event::WorkerLost {
                worker: "w1".into(),
                why: "silent".into(),
            },
        );
        let actions = s.on_event(
            1_000,
            Event::WorkerRegistered {
                worker: "w1".into(),
                cores: 2,
                memory_mb: 4096,
                drivers: vec!["d".into()],
                executors: vec![],
                exited_drivers: vec![],
            },
        );
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::LaunchDriver { .. } | Action::KillDriver { .. })),
            "{actions:?}"
        );
        assert_eq!(
            s.driver_state("d"),
            Some(&DriverState::Running {
                worker: "w1".into()
            })
        );
        assert!(
            s.on_event(100_000, Event::Tick)
                .iter()
                .all(|a| !matches!(a, Action::LaunchDriver { .. }))
        );
    }

    #[test]
    fn a_driver_that_ended_while_its_worker_was_away_is_not_run_again() {
        // Two drivers on one worker: no share held back for executors.
        let mut s = ClusterState::new(Placement::Spread).with_max_driver_core_share(1.0);
        s.on_event(0, worker("w1", 2, 4096));
        s.on_event(0, driver("done", true));
        s.on_event(0, driver("failed", false));
        s.on_event(
            10,
            Event::WorkerLost {
                worker: "w1".into(),
                why: "silent".into(),
            },
        );
        // The worker comes back: both drivers exited meanwhile, one with
        // success; the manager never heard.
        let actions = s.on_event(
            1_000,
            Event::WorkerRegistered {
                worker: "w1".into(),
                cores: 2,
                memory_mb: 4096,
                drivers: vec![],
                executors: vec![],
                exited_drivers: vec![("done".into(), Some(0)), ("failed".into(), Some(3))],
            },
        );
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::LaunchDriver { .. })),
            "{actions:?}"
        );
        assert_eq!(s.driver_state("done"), Some(&DriverState::Finished));
        assert_eq!(
            s.driver_state("failed"),
            Some(&DriverState::Failed("exited with code 3".into()))
        );
    }

    #[test]
    fn a_returning_worker_is_told_to_kill_what_was_given_away() {
        let mut s = ClusterState::new(Placement::Spread);
        s.on_event(0, worker("w1", 2, 4096));
        s.on_event(0, driver("d", true));
        s.on_event(0, app("a", 1, Some(1)));
        s.on_event(0, worker("w2", 2, 4096));
        assert_eq!(s.executors_of("a"), vec![(0, "w1".to_string())]);
        s.on_event(
            1,
            Event::WorkerLost {
                worker: "w1".into(),
                why: "partitioned".into(),
            },
        );
        // Its lease runs out: the driver is relaunched elsewhere.
        let lease = DRIVER_LEASE.as_millis() as u64;
        s.on_event(1 + lease, Event::Tick);
        assert_eq!(
            s.driver_state("d"),
            Some(&DriverState::Running {
                worker: "w2".into()
            })
        );
        // w1 comes back still running the old copies.
        let actions = s.on_event(
            2 + lease,
            Event::WorkerRegistered {
                worker: "w1".into(),
                cores: 2,
                memory_mb: 4096,
                drivers: vec!["d".into()],
                executors: vec![RunningExecutor {
                    app: "a".into(),
                    executor: 0,
                    cores: 1,
                    memory_mb: 512,
                }],
                exited_drivers: vec![],
            },
        );
        assert!(actions.contains(&Action::KillDriver {
            worker: "w1".into(),
            driver: "d".into()
        }));
        assert!(actions.contains(&Action::KillExecutor {
            worker: "w1".into(),
            app: "a".into(),
            executor: 0
        }));
        assert_eq!(
            s.driver_state("d"),
            Some(&DriverState::Running {
                worker: "w2".into()
            })
        );
    }

    fn past(s: &ClusterState, app: &str) -> Vec<(ExecutorNo, String, ExecutorEnd)> {
        s.apps()
            .into_iter()
            .find(|a| a.id == app)
            .map(|a| {
                a.past
                    .into_iter()
                    .map(|(n, p)| (n, p.worker, p.end))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn a_finished_app_keeps_what_ran_where() {
        let mut s = ClusterState::new(Placement::Spread);
        s.on_event(0, worker("w1", 2, 4096));
        s.on_event(0, app("a", 1, Some(1)));
        s.on_event(
            1,
            Event::ExecutorExited {
                app: "a".into(),
                executor: 0,
                why: "exit code 1".into(),
            },
        );
        s.on_event(2, worker("w2", 2, 4096));
        s.on_event(
            3,
            Event::WorkerLost {
                worker: "w1".into(),
                why: "nothing heard".into(),
            },
        );
        assert_eq!(s.executors_of("a"), vec![(2, "w2".to_string())]);
        s.on_event(
            4,
            Event::AppEnded {
                app: "a".into(),
                why: None,
            },
        );
        let view = s.apps().into_iter().find(|a| a.id == "a").unwrap();
        assert!(view.executors.is_empty(), "nothing is held any more");
        assert_eq!(
            past(&s, "a"),
            vec![
                (0, "w1".into(), ExecutorEnd::Exited("exit code 1".into())),
                (
                    1,
                    "w1".into(),
                    ExecutorEnd::Lost("worker w1 lost: nothing heard".into())
                ),
                (2, "w2".into(), ExecutorEnd::Killed),
            ]
        );
    }

    #[test]
    fn a_recovered_app_keeps_its_history_and_never_reuses_a_number() {
        let mut s = ClusterState::new(Placement::Spread);
        let request = AppRequest {
            name: "a".into(),
            executor_cores: 1,
            executor_memory_mb: 512,
            max_cores: Some(2),
            conf: vec![],
            binary: None,
            files: vec![],
        };
        let had = |worker: &str, end| PastExecutor {
            worker: worker.into(),
            cores: 1,
            memory_mb: 512,
            end,
        };
        s.on_event(
            0,
            Event::AppRecovered {
                app: "a".into(),
                request,
                driver: None,
                past: vec![
                    (0, had("w1", ExecutorEnd::Exited("exit code 1".into()))),
                    (1, had("w2", ExecutorEnd::Unconfirmed)),
                ],
            },
        );
        // Its worker still runs executor 1: kept, and no longer history.
        let actions = s.on_event(
            1,
            Event::WorkerRegistered {
                worker: "w2".into(),
                cores: 1,
                memory_mb: 4096,
                drivers: vec![],
                executors: vec![RunningExecutor {
                    app: "a".into(),
                    executor: 1,
                    cores: 1,
                    memory_mb: 512,
                }],
                exited_drivers: vec![],
            },
        );
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::KillExecutor { .. })),
            "{actions:?}"
        );
        assert_eq!(s.executors_of("a"), vec![(1, "w2".to_string())]);
        // The next executor takes a number never used before.
        let actions = s.on_event(2, worker("w1", 1, 4096));
        assert_eq!(launches(&actions), vec![("w1".into(), "a".into(), 2)]);
        assert_eq!(
            past(&s, "a"),
            vec![(0, "w1".into(), ExecutorEnd::Exited("exit code 1".into()))]
        );
    }

    #[test]
    fn after_a_restart_running_executors_are_kept() {
        // A fresh state, as after a cluster-manager restart: the app is
        // known again, and its worker reports what it still runs.
        let mut s = ClusterState::new(Placement::Spread);
        s.on_event(0, app("a", 1, Some(2)));
        let actions = s.on_event(
            0,
            Event::WorkerRegistered {
                worker: "w1".into(),
                cores: 2,
                memory_mb: 4096,
                drivers: vec![],
                executors: vec![RunningExecutor {
                    app: "a".into(),
                    executor: 3,
                    cores: 1,
                    memory_mb: 512,
                }],
                exited_drivers: vec![],
            },
        );
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::KillExecutor { .. })),
            "{actions:?}"
        );
        assert_eq!(launches(&actions), vec![("w1".into(), "a".into(), 4)]);
        assert_eq!(
            s.executors_of("a"),
            vec![(3, "w1".to_string()), (4, "w1".to_string())]
        );
        // An executor the worker no longer reports has ended.
        let actions = s.on_event(
            1,
            Event::WorkerRegistered {
                worker: "w1".into(),
                cores: 2,
                memory_mb: 4096,
                drivers: vec![],
                executors: vec![RunningExecutor {
                    app: "a".into(),
                    executor: 3,
                    cores: 1,
                    memory_mb: 512,
                }],
                exited_drivers: vec![],
            },
        );
        assert!(actions.contains(&Action::ExecutorLost {
            app: "a".into(),
            executor: 4,
            why: "worker w1 no longer runs it".into()
        }));
    }

    #[test]
    fn a_supervised_driver_restarts_with_backoff_within_its_budget() {
        let mut s = ClusterState::new(Placement::Spread);
        s.on_event(0, worker("w1", 2, 4096));
        s.on_event(0, driver("d", true));
        let mut now = 0;
        for restart in 0..MAX_DRIVER_RESTARTS {
            let actions = s.on_event(
                now,
                Event::DriverExited {
                    driver: "d".into(),
                    code: Some(1),
                    why: String::new(),
                    worker: None,
                },
            );
            let delay = FIRST_RESTART_DELAY * 2u32.pow(restart);
            assert_eq!(actions, vec![Action::WakeAfter(delay)]);
            // Never two copies: nothing launches before the delay is over.
            assert!(s.on_event(now + 1, Event::Tick).is_empty());
            now += delay.as_millis() as u64;
            let actions = s.on_event(now, Event::Tick);
            assert_eq!(launches(&actions).len(), 0);
            assert!(
                matches!(actions.as_slice(), [Action::LaunchDriver { driver, .. }] if driver == "d"),
                "{actions:?}"
            );
        }
        s.on_event(
            now,
            Event::DriverExited {
                driver: "d".into(),
                code: Some(1),
                why: String::new(),
                worker: None,
            },
        );
        assert_eq!(
            s.driver_state("d"),
            Some(&DriverState::Failed("exited with code 1".into()))
        );
        assert_eq!(s.worker_usage("w1"), Some((0, 2)));
    }

    #[test]
    fn a_driver_that_could_not_start_fails_with_the_workers_reason() {
        let mut s = two_workers(Placement::Spread);
        s.on_event(0, driver("d", false));
        s.on_event(
            0,
            Event::DriverExited {
                driver: "d".into(),
                code: None,
                why: "could not start: no such file".into(),
                worker: None,
            },
        );
        assert_eq!(
            s.driver_state("d"),
            Some(&DriverState::Failed("could not start: no such file".into()))
        );
    }

    #[test]
    fn a_driver_that_succeeds_or_is_killed_is_not_restarted() {
        // Two drivers on one worker: no share held back for executors.
        let mut s = ClusterState::new(Placement::Spread).with_max_driver_core_share(1.0);
        s.on_event(0, worker("w1", 2, 4096));
        s.on_event(0, driver("ok", true));
        s.on_event(0, driver("killed", true));
        assert!(
            s.on_event(
                0,
                Event::DriverExited {
                    driver: "ok".into(),
                    code: Some(0),
                    why: String::new(),
                    worker: None,
                }
            )
            .is_empty()
        );
        assert_eq!(s.driver_state("ok"), Some(&DriverState::Finished));
        let actions = s.on_event(
            0,
            Event::KillDriver {
                driver: "killed".into(),
            },
        );
        assert_eq!(
            actions,
            vec![Action::KillDriver {
                worker: "w1".into(),
                driver: "killed".into()
            }]
        );
        // Its exit after the kill changes nothing.
        assert!(
            s.on_event(
                1,
                Event::DriverExited {
                    driver: "killed".into(),
                    code: None,
                    why: String::new(),
                    worker: None,
                }
            )
            .is_empty()
        );
        assert_eq!(s.driver_state("killed"), Some(&DriverState::Killed));
        assert_eq!(s.worker_usage("w1"), Some((0, 2)));
    }

    #[test]
    fn exited_executors_are_replaced_until_too_many_fail_in_a_row() {
        let mut s = ClusterState::new(Placement::Spread);
        s.on_event(0, worker("w1", 1, 4096));
        s.on_event(0, app("a", 1, None));
        for n in 0..MAX_EXECUTOR_FAILURES {
            let actions = s.on_event(
                0,
                Event::ExecutorExited {
                    app: "a".into(),
                    executor: n,
                    why: "exit code 1".into(),
                },
            );
            assert!(actions.contains(&Action::ExecutorLost {
                app: "a".into(),
                executor: n,
                why: "exit code 1".into()
            }));
            let replaced = launches(&actions);
            if n + 1 < MAX_EXECUTOR_FAILURES {
                assert_eq!(replaced, vec![("w1".into(), "a".into(), n + 1)]);
            } else {
                assert!(replaced.is_empty());
            }
        }
        assert!(
            matches!(s.app_state("a"), Some(AppState::Failed(why)) if why.contains("in a row"))
        );
        assert_eq!(s.worker_usage("w1"), Some((0, 1)));
    }

    #[test]
    fn after_a_restart_nothing_is_placed_until_workers_had_time_to_return() {
        let mut s = ClusterState::new(Placement::Spread);
        let wake = s.on_event(
            0,
            Event::Recovering {
                grace: Duration::from_secs(3),
            },
        );
        assert_eq!(wake, vec![Action::WakeAfter(Duration::from_secs(3))]);
        s.on_event(0, driver("d", true));
        // Another worker returns first: the driver is not launched there,
        // since its own worker may still be running it.
        let early = s.on_event(100, worker("other", 2, 4096));
        assert!(
            !early
                .iter()
                .any(|a| matches!(a, Action::LaunchDriver { .. }))
        );
        assert!(s.is_recovering(100));
        // Its worker returns with it running: adopted, not launched again.
        let back = s.on_event(
            200,
            Event::WorkerRegistered {
                worker: "home".into(),
                cores: 2,
                memory_mb: 4096,
                drivers: vec!["d".into()],
                executors: vec![],
                exited_drivers: vec![],
            },
        );
        assert!(back.is_empty(), "{back:?}");
        let after = s.on_event(3000, Event::Tick);
        assert!(
            !after
                .iter()
                .any(|a| matches!(a, Action::LaunchDriver { .. }))
        );
        assert_eq!(
            s.driver_state("d"),
            Some(&DriverState::Running {
                worker: "home".into()
            })
        );
    }

    fn recovered(id: &str, running_on: Option<&str>) -> Event {
        Event::DriverRecovered {
            driver: id.into(),
            request: DriverRequest {
                cores: 1,
                memory_mb: 1024,
                supervise: true,
            },
            restarts: 2,
            running_on: running_on.map(Into::into),
        }
    }

    fn launched_driver(actions: &[Action]) -> Option<WorkerId> {
        actions.iter().find_map(|a| match a {
            Action::LaunchDriver { worker, .. } => Some(worker.clone()),
            _ => None,
        })
    }

    #[test]
    fn a_driver_recovered_running_is_not_replaced_before_its_lease_runs_out() {
        let mut s = ClusterState::new(Placement::Spread);
        s.on_event(
            0,
            Event::Recovering {
                grace: Duration::from_secs(2),
            },
        );
        let wake = s.on_event(0, recovered("d", Some("home")));
        assert!(wake.contains(&Action::WakeAfter(DRIVER_LEASE)), "{wake:?}");
        s.on_event(10, worker("other", 2, 4096));
        // Its worker has not said how it stands, and may be cut off from
        // this manager only: the driver may still run there.
        assert_eq!(launched_driver(&s.on_event(2000, Event::Tick)), None);
        assert!(matches!(
            s.driver_state("d"),
            Some(DriverState::Unreachable { worker, .. }) if worker == "home"
        ));
        let lease = DRIVER_LEASE.as_millis() as u64;
        assert_eq!(launched_driver(&s.on_event(lease - 1, Event::Tick)), None);
        assert_eq!(
            launched_driver(&s.on_event(lease, Event::Tick)),
            Some("other".into())
        );
        assert_eq!(s.drivers()[0].restarts, 3, "its restarts are carried over");
        // A driver journaled between attempts waits for a worker only.
        let mut s = ClusterState::new(Placement::Spread);
        s.on_event(0, recovered("between", None));
        assert_eq!(
            launched_driver(&s.on_event(10, worker("w1", 2, 4096))),
            Some("w1".into())
        );
    }

    #[test]
    fn an_exit_heard_after_a_restart_settles_the_recovered_driver() {
        let mut s = ClusterState::new(Placement::Spread);
        s.on_event(
            0,
            Event::Recovering {
                grace: Duration::from_secs(2),
            },
        );
        s.on_event(0, recovered("done", Some("home")));
        s.on_event(0, recovered("failed", Some("home")));
        // It exited 0 while the manager was down, and the other failed:
        // the first is over, the second restarts; neither runs twice.
        let back = s.on_event(
            100,
            Event::WorkerRegistered {
                worker: "home".into(),
                cores: 2,
                memory_mb: 4096,
                drivers: vec![],
                executors: vec![],
                exited_drivers: vec![("done".into(), Some(0)), ("failed".into(), Some(1))],
            },
        );
        assert_eq!(launched_driver(&back), None, "{back:?}");
        assert_eq!(s.driver_state("done"), Some(&DriverState::Finished));
        assert!(matches!(
            s.driver_state("failed"),
            Some(DriverState::Restarting { .. })
        ));
        let later = s.on_event(2000 + 8000, Event::Tick);
        assert_eq!(launched_driver(&later), Some("home".into()));
        assert_eq!(s.driver_state("done"), Some(&DriverState::Finished));
    }

    #[test]
    fn the_exit_of_an_attempt_given_away_is_not_the_exit_of_the_one_running_now() {
        let mut s = ClusterState::new(Placement::Spread);
        s.on_event(0, worker("w1", 2, 4096));
        s.on_event(0, driver("d", true));
        s.on_event(0, worker("w2", 2, 4096));
        s.on_event(
            5,
            Event::WorkerLost {
                worker: "w1".into(),
                why: "silent".into(),
            },
        );
        let lease = DRIVER_LEASE.as_millis() as u64;
        assert_eq!(
            launched_driver(&s.on_event(5 + lease, Event::Tick)),
            Some("w2".into())
        );
        // w1 comes back still running the first attempt: it is told to
        // kill it, and says so once it has.
        let back = s.on_event(
            6 + lease,
            Event::WorkerRegistered {
                worker: "w1".into(),
                cores: 2,
                memory_mb: 4096,
                drivers: vec!["d".into()],
                executors: vec![],
                exited_drivers: vec![],
            },
        );
        assert!(back.contains(&Action::KillDriver {
            worker: "w1".into(),
            driver: "d".into(),
        }));
        let killed = s.on_event(
            7 + lease,
            Event::DriverExited {
                driver: "d".into(),
                code: None,
                why: "killed by signal 9".into(),
                worker: Some("w1".into()),
            },
        );
        assert!(killed.is_empty(), "{killed:?}");
        assert_eq!(
            s.driver_state("d"),
            Some(&DriverState::Running {
                worker: "w2".into()
            })
        );
        assert_eq!(
            launched_driver(&s.on_event(10 + lease + 5000, Event::Tick)),
            None
        );
        // The attempt on w2 ends the submission.
        s.on_event(
            11 + lease + 5000,
            Event::DriverExited {
                driver: "d".into(),
                code: Some(0),
                why: String::new(),
                worker: Some("w2".into()),
            },
        );
        assert_eq!(s.driver_state("d"), Some(&DriverState::Finished));
        assert_eq!(s.worker_usage("w2"), Some((0, 2)));
    }

    #[test]
    fn a_recovered_driver_whose_worker_never_returns_is_launched_after_the_grace() {
        let mut s = ClusterState::new(Placement::Spread);
        s.on_event(
            0,
            Event::Recovering {
                grace: Duration::from_secs(3),
            },
        );
        s.on_event(0, driver("d", true));
        s.on_event(10, worker("w1", 2, 4096));
        let actions = s.on_event(3000, Event::Tick);
        assert!(actions.contains(&Action::LaunchDriver {
            worker: "w1".into(),
            driver: "d".into(),
            cores: 1,
            memory_mb: 1024,
        }));
    }
}
