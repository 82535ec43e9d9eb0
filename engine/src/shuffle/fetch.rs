//! Reaching shuffle blocks that another executor holds: the fetcher a reduce
//! task reads remote blocks through, and the map output locations that tell
//! it which executor wrote each map task's output.

use std::collections::BTreeMap;
use std::fmt;

use datafusion::arrow::record_batch::RecordBatch;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use super::store::ShuffleBlockId;
use crate::error::EngineError;
use crate::stages::StageId;

/// Batches as they arrive; an error item ends the stream, and the stream
/// ends without one only once every batch asked for has arrived.
pub type FetchedBatches = BoxStream<'static, Result<RecordBatch, EngineError>>;

/// Fetches blocks from the executor at a location key.
pub trait BlockFetcher: Send + Sync + fmt::Debug {
    /// The batches of `blocks`, concatenated in the order of `blocks`, from
    /// the executor known as `location` (an executor id): the future ends
    /// once the executor has started sending, and the stream yields the
    /// batches as they come, never holding more than a few in memory.
    fn fetch(
        &self,
        location: &str,
        blocks: Vec<ShuffleBlockId>,
    ) -> BoxFuture<'static, Result<FetchedBatches, EngineError>>;

    /// Blocks read so far: (from another executor's files on this host,
    /// sent over the network).
    fn blocks_read(&self) -> (u64, u64) {
        (0, 0)
    }
}

/// For each stage, the location key of the executor holding the output of
/// map task `i`. A task receives it as a session config extension.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapOutputLocations {
    stages: BTreeMap<StageId, Vec<String>>,
}

impl MapOutputLocations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records where each map task of `stage` wrote its output, in map order.
    pub fn insert(&mut self, stage: StageId, locations: Vec<String>) {
        self.stages.insert(stage, locations);
    }

    /// `insert`, for building in one expression.
    pub fn with_stage(mut self, stage: StageId, locations: Vec<String>) -> Self {
        self.insert(stage, locations);
        self
    }

    /// The locations of `stage`'s map outputs, if known.
    pub fn stage(&self, stage: StageId) -> Option<&[String]> {
        self.stages.get(&stage).map(Vec::as_slice)
    }

    /// The location of map task `map` of `stage`, if known.
    pub fn location(&self, stage: StageId, map: usize) -> Option<&str> {
        self.stage(stage)
            .and_then(|maps| maps.get(map))
            .map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }
}

impl FromIterator<(StageId, Vec<String>)> for MapOutputLocations {
    fn from_iter<I: IntoIterator<Item = (StageId, Vec<String>)>>(iter: I) -> Self {
        Self {
            stages: iter.into_iter().collect(),
        }
    }
}

/// Where a run of consecutive blocks of one reduce partition is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BlockRead {
    Local(Vec<ShuffleBlockId>),
    Remote {
        location: String,
        blocks: Vec<ShuffleBlockId>,
    },
}

/// Splits `blocks` (in map order) into runs read from one place each: one
/// fetch per run keeps the map order without framing blocks on the wire.
pub(crate) fn plan_block_reads(
    blocks: Vec<ShuffleBlockId>,
    maps: &[String],
    local: &str,
) -> Result<Vec<BlockRead>, EngineError> {
    let mut reads: Vec<BlockRead> = Vec::new();
    for id in blocks {
        let location = maps
            .get(id.map)
            .ok_or(EngineError::MissingMapOutputLocation {
                stage: id.stage,
                map: id.map,
            })?;
        let is_local = location == local;
        match reads.last_mut() {
            Some(BlockRead::Local(run)) if is_local => run.push(id),
            Some(BlockRead::Remote {
                location: at,
                blocks,
            }) if !is_local && at == location => blocks.push(id),
            _ if is_local => reads.push(BlockRead::Local(vec![id])),
            _ => reads.push(BlockRead::Remote {
                location: location.clone(),
                blocks: vec![id],
            }),
        }
    }
    Ok(reads)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(map: usize) -> ShuffleBlockId {
        ShuffleBlockId {
            stage: 3,
            map,
            reduce: 1,
        }
    }

    fn keys(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn consecutive_blocks_from_one_executor_are_fetched_together() {
        let maps = keys(&["a", "b", "b", "a", "c"]);
        let reads = plan_block_reads((0..5).map(block).collect(), &maps, "a").unwrap();
        assert_eq!(
            reads,
            vec![
                BlockRead::Local(vec![block(0)]),
                BlockRead::Remote {
                    location: "b".into(),
                    blocks: vec![block(1), block(2)],
                },
                BlockRead::Local(vec![block(3)]),
                BlockRead::Remote {
                    location: "c".into(),
                    blocks: vec![block(4)],
                },
            ]
        );
    }

    #[test]
    fn a_map_task_without_a_location_is_an_error() {
        let maps = keys(&["a"]);
        let err = plan_block_reads(vec![block(0), block(1)], &maps, "a").unwrap_err();
        assert!(
            matches!(
                err,
                EngineError::MissingMapOutputLocation { stage: 3, map: 1 }
            ),
            "{err}"
        );
    }

    #[test]
    fn locations_are_looked_up_by_stage_and_map() {
        let locations = MapOutputLocations::new().with_stage(2, keys(&["x", "y"]));
        assert_eq!(locations.location(2, 1), Some("y"));
        assert_eq!(locations.location(2, 2), None);
        assert_eq!(locations.location(1, 0), None);
        assert_eq!(locations.stage(2).map(<[String]>::len), Some(2));
    }
}
