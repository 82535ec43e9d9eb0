//! Where shuffle blocks live between the map task that writes them and the
//! reduce tasks that read them. In local mode this is memory shared by every
//! executor of the process: blocks are Arrow batches, never copied.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::record_batch::RecordBatch;

use super::fetch::BlockFetcher;
use crate::error::EngineError;
use crate::stages::StageId;

/// One block: the output of map task `map` of `stage` destined for reduce
/// partition `reduce`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShuffleBlockId {
    pub stage: StageId,
    pub map: usize,
    pub reduce: usize,
}

impl fmt::Display for ShuffleBlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shuffle_{}_{}_{}", self.stage, self.map, self.reduce)
    }
}

/// Storage for shuffle blocks.
pub trait BlockStore: Send + Sync + fmt::Debug {
    /// Stores a block, replacing any earlier attempt's block with the same id.
    fn put(&self, id: ShuffleBlockId, batches: Vec<RecordBatch>);
    /// Fetches a block.
    fn get(&self, id: ShuffleBlockId) -> Result<Vec<RecordBatch>, EngineError>;
    /// Drops every block of these stages (their job is over).
    fn remove_stages(&self, stages: &[StageId]);
    /// Drops the blocks map task `map` of `stage` wrote.
    fn remove_map(&self, stage: StageId, map: usize);
    /// How many blocks are held.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Blocks kept in memory, shared by all executors of one process.
#[derive(Debug, Default)]
pub struct InMemoryBlockStore {
    blocks: Mutex<BTreeMap<ShuffleBlockId, Vec<RecordBatch>>>,
}

impl InMemoryBlockStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ShuffleBlockId, Vec<RecordBatch>>> {
        // A panic while holding this lock cannot leave a half-written block:
        // inserts and removals are single map operations.
        self.blocks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl BlockStore for InMemoryBlockStore {
    fn put(&self, id: ShuffleBlockId, batches: Vec<RecordBatch>) {
        self.lock().insert(id, batches);
    }

    fn get(&self, id: ShuffleBlockId) -> Result<Vec<RecordBatch>, EngineError> {
        self.lock()
            .get(&id)
            .cloned()
            .ok_or(EngineError::MissingBlock(id))
    }

    fn remove_stages(&self, stages: &[StageId]) {
        self.lock().retain(|id, _| !stages.contains(&id.stage));
    }

    fn remove_map(&self, stage: StageId, map: usize) {
        self.lock()
            .retain(|id, _| !(id.stage == stage && id.map == map));
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The shuffle service a task finds in its `TaskContext` (as a session
/// config extension), so that plans never hold a store themselves.
#[derive(Debug, Clone)]
pub struct ShuffleEnv {
    /// The blocks this executor's map tasks wrote.
    pub store: Arc<dyn BlockStore>,
    /// This executor's location key, as it appears in `MapOutputLocations`.
    pub local: String,
    /// How to reach blocks other executors hold; `None` in local mode, where
    /// every block is in `store`.
    pub fetcher: Option<Arc<dyn BlockFetcher>>,
}

impl ShuffleEnv {
    /// Local mode: every block is read from `store`.
    pub fn new(store: Arc<dyn BlockStore>) -> Self {
        Self {
            store,
            local: String::new(),
            fetcher: None,
        }
    }

    /// An executor among others: blocks whose map task ran on `local` are
    /// read from `store`, the rest through `fetcher`.
    pub fn remote(
        store: Arc<dyn BlockStore>,
        local: impl Into<String>,
        fetcher: Arc<dyn BlockFetcher>,
    ) -> Self {
        Self {
            store,
            local: local.into(),
            fetcher: Some(fetcher),
        }
    }
}
