//! End-to-end tests: local mode through the session API and the `ember`
//! binary as a user runs it.

mod cli;
mod local_mode;
mod support;
