//! Shuffle: the plan nodes that replace a stage boundary (a writer at the top
//! of the map stage, a reader at the bottom of the next), the block store
//! they meet in, and the fetcher that reaches blocks other executors hold.

mod fetch;
mod reader;
mod store;
mod writer;

pub use fetch::{BlockFetcher, FetchedBatches, MapOutputLocations};
pub use reader::{ReadMode, ShuffleReaderExec};
pub use store::{BlockStore, InMemoryBlockStore, ShuffleBlockId, ShuffleEnv};
pub use writer::{MapStatus, ShuffleOutput, ShuffleWriterExec};
