//! The engine's error type: what went wrong while planning or shuffling.

use crate::shuffle::ShuffleBlockId;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error(
        "shuffle block {0} is missing: the map task that wrote it is gone or its output was removed"
    )]
    MissingBlock(ShuffleBlockId),
    #[error("this task has no shuffle service in its context (an executor must provide one)")]
    NoShuffleEnv,
}

impl From<EngineError> for datafusion::error::DataFusionError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::DataFusion(inner) => inner,
            other => datafusion::error::DataFusionError::External(Box::new(other)),
        }
    }
}
