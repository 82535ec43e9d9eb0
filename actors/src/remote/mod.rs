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
