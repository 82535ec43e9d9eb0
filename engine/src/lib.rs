//! Ember's data plane on DataFusion: it cuts a physical plan into stages at
//! its shuffle boundaries, provides the shuffle writer/reader plan nodes that
//! replace those boundaries, ships stage plans as bytes, and splits SQL
//! scripts into statements. File output is staged per task attempt and
//! committed by the driver (`commit`).

pub mod adaptive;
pub mod balance;
pub mod codec;
pub mod commit;
pub mod distribute;
pub mod error;
pub mod files;
pub mod functions;
pub mod memory;
pub mod padded;
pub mod scan_errors;
pub mod script;
pub mod session;
pub mod shuffle;
pub mod stages;
pub mod stream_state;
pub mod subquery;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod testing;

pub use codec::{EmberCodec, decode_plan, encode_plan};
pub use commit::{Committed, StagedOutput, TaskAttempt, isolate_attempt, stage_file_output};
pub use error::EngineError;
pub use functions::Functions;
pub use scan_errors::name_files_in_errors;
pub use shuffle::{
    BlockBatches, BlockFetcher, BlockStore, FetchedBatches, MapOutputLocations, ShuffleBlockId,
    ShuffleEnv,
};
pub use stages::{Stage, StageGraph, StageId, StageKind, StagePlanner};
