//! Shuffle: the plan nodes that replace a stage boundary (a writer at the top
//! of the map stage, a reader at the bottom of the next), the block store
//! they meet in, and the fetcher that reaches blocks other executors hold.

mod compact;
mod fetch;
mod output;
mod reader;
mod result;
mod store;
mod writer;

pub use compact::compact_views;
pub use fetch::{BlockFetcher, FetchedBatches, MapOutputLocations};
pub use reader::{ReadMode, ShuffleReaderExec};
pub use result::{DIRECT_RESULT_BYTES, ResultOutput, finish_result, result_block};
pub use store::{
    BlockBatches, BlockStore, LocatedBlock, MapOutput, RawBatch, RawBlocks, ShuffleBlockId,
    ShuffleEnv, StoreUsage, read_blocks, read_on_blocking_pool,
};
pub use writer::{MapStatus, ShuffleOutput, ShuffleWriterExec};
