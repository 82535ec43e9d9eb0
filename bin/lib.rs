//! Ember: Spark-style applications on a Rust runtime of supervised actors.
//! This crate is the facade (sessions, master URLs, output) and the `ember`
//! command line.

/// `println!` that never panics: when nobody reads standard output any
/// more (`| head`, a closed pipe) the line is dropped, as any Unix tool
/// drops it, instead of the process ending in a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that never panics, for the same reason: a closed standard
/// error loses the message, not the process.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod allocator;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod datagen;
pub mod fuzz_sql;
pub mod local_cluster;
pub mod master;
pub mod output;
pub mod probe;
pub mod progress;
pub mod session;
pub mod shell;
pub mod simulate;
pub mod tpch;

pub use ember_actors as actors;
pub use ember_engine as engine;
pub use ember_simulations as simulations;
pub use ember_transport as transport;
pub use master::Master;
pub use session::{Mode, Session, SessionError, SessionOptions, StatementOutcome};
