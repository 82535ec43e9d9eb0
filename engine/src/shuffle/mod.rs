//! Shuffle: the plan nodes that replace a stage boundary (a writer at the top
//! of the map stage, a reader at the bottom of the next) and the block store
//! they meet in.

mod reader;
mod store;
mod writer;

pub use reader::{ReadMode, ShuffleReaderExec};
pub use store::{BlockStore, InMemoryBlockStore, ShuffleBlockId, ShuffleEnv};
pub use writer::{MapStatus, ShuffleOutput, ShuffleWriterExec};
