//! Ember's process roles: the cluster manager, the worker, and the
//! executor and cluster-mode driver children a worker starts. The `ember`
//! binary serves them with `--role`, and so does an application's own
//! binary, with its own functions.

#[macro_use]
extern crate ember_actors;

pub mod driver;
pub mod roles;

pub use driver::{DriverLaunch, launched};
pub use roles::{
    ManagerArgs, WORK_DIR_LOCK, WorkerArgs, default_worker_memory_mb, run_cluster_manager,
    run_executor, run_worker,
};
