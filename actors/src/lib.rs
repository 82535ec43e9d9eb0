//! Ember's supervised actors: the driver that schedules a job's tasks, the
//! executors that run them, the links that make them share fate, and the
//! launcher that gives a driver its executors in local mode.

pub mod binaries;
pub mod cluster_app;
pub mod cluster_manager;
pub mod config;
pub mod driver;
pub mod executor;
pub mod faults;
pub mod local;
pub mod owner_only;
pub mod protocol;
pub mod remote;
pub mod supervision;
pub mod worker;

pub use config::{ConfigError, EmberConf};
pub use driver::{Driver, JobError, JobListener, JobOutput, ProgressEvent};
pub use executor::{Executor, TaskPool};
pub use local::{LocalCluster, LocalClusterSpec};
pub use protocol::{ExecutorId, JobId, TaskId};
