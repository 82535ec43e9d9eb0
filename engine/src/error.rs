//! The engine's error type: what went wrong while planning, shipping a plan
//! to an executor, or shuffling.

use std::path::PathBuf;

use crate::shuffle::ShuffleBlockId;
use crate::stages::StageId;

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
    #[error(
        "cannot encode the stage plan to send it to an executor: {0} (the plan holds an operator \
         that cannot be serialized; run the query in local mode or report the operator)"
    )]
    PlanEncode(#[source] datafusion::error::DataFusionError),
    #[error(
        "cannot decode the stage plan sent by the driver: {0} (driver and executor may run \
         different Ember versions, or the plan was damaged in transit)"
    )]
    PlanDecode(#[source] datafusion::error::DataFusionError),
    #[error("malformed Ember node in a stage plan: {0}")]
    MalformedNode(String),
    #[error(
        "no executor is known to hold the output of map task {map} of stage {stage}: the task \
         was sent without the locations of its parent stage's output"
    )]
    MissingMapOutputLocation { stage: StageId, map: usize },
    #[error(
        "cannot write {what} to {dir}: {why}; free space there, point \
         datafusion.runtime.temp_directory at a larger disk, or raise \
         datafusion.runtime.max_temp_directory_size"
    )]
    ShuffleWrite {
        what: String,
        dir: String,
        why: String,
    },
    #[error("fetching shuffle blocks failed: {0}")]
    Fetch(String),
    /// Blocks of these map tasks could not be read: their output is lost
    /// and must be computed again.
    #[error(
        "cannot read the output of map task(s) {maps:?} of stage {stage} from executor '{location}': {why}"
    )]
    FetchFailed {
        stage: StageId,
        maps: Vec<usize>,
        location: String,
        why: String,
    },
    #[error(
        "cannot write output to {0}: Ember commits file output only on a file system (a plain \
         path or file://), object stores are not supported yet"
    )]
    ObjectStoreOutput(String),
    #[error(
        "cannot commit output written by {0}: Ember commits only Parquet, CSV and JSON output; \
         write one of those formats"
    )]
    UnsupportedSink(String),
    #[error(
        "cannot {action} {}: {source}; check free space and permissions there, then run the \
         statement again",
        path.display()
    )]
    Staging {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "committing the output to {} failed at {}: {source}; the destination may hold part of the \
         output and what was not moved is kept in {}: free space or fix permissions, remove the \
         partial output and run the statement again",
        destination.display(),
        path.display(),
        staging.display()
    )]
    Commit {
        destination: PathBuf,
        path: PathBuf,
        staging: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another attempt of this submission claimed this output ({marker}) but never \
         finished committing it: check the destination, then remove the marker to let \
         the job commit again (this attempt's files were dropped from {staging})",
        marker = marker.display(),
        staging = staging.display()
    )]
    CommitInDoubt { marker: PathBuf, staging: PathBuf },
}

impl EngineError {
    /// The fetch failure inside a task's error, if that is what it is:
    /// DataFusion (and Arrow) may wrap it several times.
    pub fn find_fetch_failure(
        error: &datafusion::error::DataFusionError,
    ) -> Option<(StageId, Vec<usize>, String)> {
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = current {
            if let Some(EngineError::FetchFailed {
                stage,
                maps,
                location,
                ..
            }) = e.downcast_ref::<EngineError>()
            {
                return Some((*stage, maps.clone(), location.clone()));
            }
            current = e.source();
        }
        None
    }
}

impl From<EngineError> for datafusion::error::DataFusionError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::DataFusion(inner) => inner,
            other => datafusion::error::DataFusionError::External(Box::new(other)),
        }
    }
}
