//! Ember's supervised actors: the driver that schedules a job's tasks, the
//! executors that run them, the links that make them share fate, and the
//! launcher that gives a driver its executors in local mode.

/// `println!` that never panics: when nobody reads standard output any
/// more (`| head`, a closed pipe) the line is dropped, as any Unix tool
/// drops it, instead of the process ending in a panic.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that never panics, for the same reason: a closed standard
/// error loses the message, not the process.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

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
pub use driver::{Driver, JobError, JobListener, JobOutput, JobRows, ProgressEvent, ResultSource};
pub use executor::{Executor, TaskPool};
pub use local::{LocalCluster, LocalClusterSpec};
pub use protocol::{ExecutorId, JobId, TaskId};
