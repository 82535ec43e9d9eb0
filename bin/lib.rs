//! Ember: Spark-style applications on a Rust runtime of supervised actors.
//! This crate is the facade (the session, the runtime, output) and the
//! `ember` command line.

#[macro_use]
pub extern crate ember_actors as actors;

pub mod allocator;
pub mod app;
pub mod cli;
pub mod client;
pub mod datagen;
pub mod fuzz_sql;
pub mod local_cluster;
pub mod output;
pub mod probe;
pub mod progress;
pub mod shell;
pub mod simulate;
pub mod tpch;

pub use app::{App, AppResult};
pub use ember_engine as engine;
pub use ember_engine::Functions;
pub use ember_runtime as runtime;
pub use ember_session as session;
pub use ember_session::{Master, Mode, Session, SessionError, SessionOptions, StatementOutcome};
pub use ember_simulations as simulations;
pub use ember_transport as transport;
