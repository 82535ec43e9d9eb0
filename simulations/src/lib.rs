//! Seeded fault-injection simulations of an Ember cluster. A seed fixes a
//! workload and a fault schedule; the real cluster manager, worker, driver
//! and executor actors run it on a simulated network in virtual time, and
//! checkers hold them to Ember's promises: no orphan executors, every job
//! right or failed for a reason a fault of its seed explains, every row
//! exactly once (in files too), no submission forgotten across manager
//! restarts or damaged journals, no worker over capacity.

pub mod campaign;
pub mod cluster_driver;
pub mod failures;
pub mod jobs;
pub mod run;
pub mod scenario;
pub mod streaming;
pub mod submission;
pub mod workload;
pub mod world;

pub use campaign::{Campaign, CampaignReport};
pub use failures::{Cause, JobFailure};
pub use run::{Bugs, SeedReport, run_seed};
pub use scenario::{DeployMode, FaultKind, Scenario, Shape};
