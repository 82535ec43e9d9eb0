//! The cluster manager: the registry of workers, applications and drivers
//! that decides where executors and cluster-mode drivers run. Its decisions
//! live in [`state`], a plain struct tested without actors or sockets.

pub mod state;

pub use state::{
    Action, AppId, AppRequest, AppState, ClusterState, DriverId, DriverRequest, DriverState, Event,
    ExecutorNo, Placement, RunningExecutor, WorkerId,
};
