//! Local mode: the whole application in one process. The driver runs on an
//! Arbiter (thread) of its own and each executor on another, exchanging the
//! same messages they would across the network, through in-process
//! mailboxes. `local` (one thread) runs its single executor on the driver's
//! thread.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::prelude::*;
use datafusion::prelude::SessionConfig;
use ember_engine::memory::ExecutorMemory;
use ember_engine::{BlockStore, ShuffleEnv};
use ember_transport::ActorAddress;

use crate::driver::{
    Driver, DriverHandle, ExecutorLauncher, JobListener, ListExecutors, SchedulerConfig, StopDriver,
};
use crate::executor::{Executor, ExecutorSpec, TaskPool};
use crate::faults::Faults;
use crate::protocol::ExecutorId;

/// What a local application looks like.
#[derive(Clone)]
pub struct LocalClusterSpec {
    /// Task slots in all (`local[N]`'s N).
    pub threads: usize,
    /// How the driver handles faults; `max_failures` is `local[N,F]`'s F.
    /// Map output always outlives executors here: they share one store.
    pub scheduler: SchedulerConfig,
    /// Faults to inject (`ember.faults.*`).
    pub faults: Arc<Faults>,
    pub listener: Option<Arc<dyn JobListener>>,
    /// DataFusion settings executors run tasks with.
    pub session_config: SessionConfig,
    /// The process's memory budget and spill space, which every executor
    /// shares (and so does the driver).
    pub memory: Arc<ExecutorMemory>,
}

/// How `threads` task slots are shared out among executor threads: one
/// executor per thread but the driver's, the slots spread evenly.
pub fn executor_slots(threads: usize) -> Vec<usize> {
    let threads = threads.max(1);
    let executors = (threads - 1).max(1);
    (0..executors)
        .map(|i| threads / executors + usize::from(i < threads % executors))
        .collect()
}

type Started = Arc<Mutex<Vec<Addr<Executor>>>>;

/// Starts executors as threads of this process.
struct LocalLauncher {
    threads: usize,
    pool: TaskPool,
    shuffle: Arc<ShuffleEnv>,
    session_config: SessionConfig,
    started: Started,
    arbiters: Vec<Arbiter>,
    faults: Arc<Faults>,
    memory: Arc<ExecutorMemory>,
}

impl ExecutorLauncher for LocalLauncher {
    fn launch(&mut self, driver: DriverHandle) {
        let spec = |id: String, slots: usize, owns_arbiter: bool| ExecutorSpec {
            id: ExecutorId(id),
            slots,
            driver: driver.clone(),
            pool: self.pool.clone(),
            shuffle: Arc::clone(&self.shuffle),
            session_config: self.session_config.clone(),
            owns_arbiter,
            faults: Arc::clone(&self.faults),
            memory: Arc::clone(&self.memory),
            report_rss: true,
        };
        let mut started = self.started.lock().unwrap_or_else(PoisonError::into_inner);
        if self.threads <= 1 {
            // `local`: the driver's own thread runs its tasks.
            started.push(Executor::new(spec("driver".to_string(), 1, false)).start());
            return;
        }
        for (i, slots) in executor_slots(self.threads).into_iter().enumerate() {
            let arbiter = Arbiter::new();
            let spec = spec((i + 1).to_string(), slots, true);
            started.push(Executor::start_in_arbiter(&arbiter.handle(), move |_| {
                Executor::new(spec)
            }));
            self.arbiters.push(arbiter);
        }
    }
}

/// A running local application: its driver, executors and task threads.
pub struct LocalCluster {
    driver: Addr<Driver>,
    driver_arbiter: Arbiter,
    executors: Started,
    threads: usize,
    runtime: Option<tokio::runtime::Runtime>,
    store: Arc<BlockStore>,
}

impl LocalCluster {
    /// Starts the driver; it starts its executors. Must run inside an actix
    /// System.
    pub fn start(spec: LocalClusterSpec) -> std::io::Result<Self> {
        let threads = spec.threads.max(1);
        let (runtime, pool) = if threads == 1 {
            (None, TaskPool::ActorThread)
        } else {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("ember-task")
                .enable_all()
                .build()?;
            let pool = TaskPool::Runtime(runtime.handle().clone());
            (Some(runtime), pool)
        };
        let store = Arc::new(BlockStore::default());
        let executors: Started = Arc::default();
        let launcher = LocalLauncher {
            threads,
            pool,
            shuffle: Arc::new(ShuffleEnv::new(store.clone()).with_storage(&spec.memory)),
            session_config: spec.session_config,
            started: Arc::clone(&executors),
            arbiters: Vec::new(),
            faults: spec.faults,
            memory: Arc::clone(&spec.memory),
        };
        let driver_arbiter = Arbiter::new();
        let scheduler = SchedulerConfig {
            shuffle_outlives_executors: true,
            ..spec.scheduler
        };
        let listener = spec.listener;
        let driver = Driver::start_in_arbiter(&driver_arbiter.handle(), move |_| {
            Driver::new(
                ActorAddress::local("driver"),
                scheduler,
                listener,
                Box::new(launcher),
            )
        });
        Ok(Self {
            driver,
            driver_arbiter,
            executors,
            threads,
            runtime,
            store,
        })
    }

    /// Waits until every executor has registered with the driver; returns
    /// false if they have not within `timeout`.
    pub async fn wait_for_executors(&self, timeout: Duration) -> bool {
        let expected = executor_slots(self.threads).len();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.driver.send(ListExecutors::ACTIVE).await {
                Ok(listed) if listed.len() >= expected => return true,
                Ok(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(1)).await
                }
                _ => return false,
            }
        }
    }

    /// Where the result rows executors hold are read from: the store they
    /// share.
    pub fn results(&self) -> crate::driver::ResultSource {
        crate::driver::ResultSource::Store(Arc::clone(&self.store))
    }

    pub fn driver(&self) -> &Addr<Driver> {
        &self.driver
    }

    /// Threads that run only an executor (0 in `local`).
    pub fn executor_threads(&self) -> usize {
        if self.threads == 1 {
            0
        } else {
            executor_slots(self.threads).len()
        }
    }

    /// The executors started so far.
    pub fn executors(&self) -> Vec<Addr<Executor>> {
        self.executors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Shuffle blocks currently held.
    pub fn shuffle_blocks(&self) -> usize {
        self.store.len()
    }

    /// Stops the driver and waits (up to `grace`) for its executors to follow.
    /// Returns whether they all did.
    pub async fn stop(mut self, grace: Duration) -> bool {
        let _ = self.driver.send(StopDriver).await;
        let deadline = tokio::time::Instant::now() + grace;
        let mut all_gone = false;
        while tokio::time::Instant::now() < deadline {
            if self.executors().iter().all(|e| !e.connected()) {
                all_gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.shutdown();
        all_gone
    }

    fn shutdown(&mut self) {
        self.driver_arbiter.stop();
        if let Some(runtime) = self.runtime.take() {
            // Not `drop`: this may run inside an async context.
            runtime.shutdown_background();
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::executor_slots;

    #[test]
    fn slots_are_spread_over_executor_threads() {
        assert_eq!(executor_slots(1), vec![1]);
        assert_eq!(executor_slots(2), vec![2]);
        assert_eq!(executor_slots(3), vec![2, 1]);
        assert_eq!(executor_slots(5), vec![2, 1, 1, 1]);
        for n in 1..40 {
            assert_eq!(executor_slots(n).iter().sum::<usize>(), n);
        }
    }
}
