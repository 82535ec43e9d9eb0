//! Ember's data plane on DataFusion: it cuts a physical plan into stages at
//! its shuffle boundaries, provides the shuffle writer/reader plan nodes that
//! replace those boundaries, and splits SQL scripts into statements.

pub mod error;
pub mod script;
pub mod session;
pub mod shuffle;
pub mod stages;

pub use error::EngineError;
pub use shuffle::{BlockStore, InMemoryBlockStore, ShuffleBlockId, ShuffleEnv};
pub use stages::{Stage, StageGraph, StageId, StageKind, StagePlanner};
