//! End-to-end tests: local mode through the session API and the `ember`
//! binary as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// The streaming session futures nest deeply.
#![recursion_limit = "256"]

mod apps;
mod cli;
mod cluster;
mod faults;
mod fuzz_sql;
mod local_mode;
mod memory;
mod netns;
mod shell;
mod simulate;
mod streaming;
mod support;
mod tpch;
mod transport;
