//! Ember's SparkSession: an application's entry point in its own process.
//! It plans SQL on DataFusion, cuts plans into stages, hands them to the
//! driver, commits file output, and runs scripts statement by statement.

#[macro_use]
extern crate ember_actors;

pub mod master;
pub mod script;
mod session;
pub mod setup;
pub mod streaming;

pub use master::Master;
pub use script::{
    Flow, ScriptEnd, ScriptError, ScriptFailure, SinkError, run_script, statement_failed,
};
pub use session::{
    ClusterSettings, CommitUsedAttempts, Mode, OutputCommitter, Session, SessionError,
    SessionOptions, StatementOutcome, missing_locations, output_claim,
};
