//! A driver and its executors in different processes: the wire messages
//! they exchange over a [`Node`](ember_transport::Node), and the proxies
//! that let the same `Driver` and `Executor` actors as local mode talk
//! through it.

pub mod driver_side;
pub mod executor_side;
pub mod fetch;
pub mod hub;
pub mod wire;

pub use driver_side::{CloseEndpoint, DriverEndpoint, ExecutorLostNotice};
pub use executor_side::{RemoteExecutor, RemoteExecutorSpec, start_remote_executor};
pub use wire::NodeContact;

/// How long a new executor waits for its driver to answer its first
/// handshake before it exits. A live driver answers in milliseconds; one
/// that ended while the executor was being launched (and whose worker did
/// not hear of it, cut off from the manager) must not keep the executor
/// past the promise that none outlives its driver by more than 3 s.
pub const DRIVER_HANDSHAKE_BOUND: std::time::Duration = std::time::Duration::from_millis(2500);
