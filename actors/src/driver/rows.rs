//! A succeeded job's rows as a stream: result partitions in order, each
//! one's rows from the job's answer when they came with it, or read from
//! the executor holding them as the caller takes them. However many rows
//! a query returns, the caller holds a few batches at a time; the held
//! rows are let go once read (or when the caller drops the stream).

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use ember_engine::shuffle::{ResultOutput, read_blocks, result_block};
use ember_engine::{BlockFetcher, BlockStore, FetchedBatches, ShuffleBlockId, StageId};
use futures::StreamExt;

use super::{JobError, JobOutput};
use crate::protocol::{ExecutorId, JobId, TaskId};

/// One result partition of a succeeded job.
#[derive(Debug, Clone)]
pub struct ResultPart {
    pub partition: usize,
    /// The executor whose attempt was used (and that holds held rows).
    pub executor: ExecutorId,
    pub output: ResultOutput,
}

/// What the driver answers a succeeded job with.
#[derive(Debug)]
pub struct JobResult {
    pub job: JobId,
    pub schema: SchemaRef,
    /// The result stage, whose blocks hold the held rows.
    pub stage: StageId,
    /// In partition order.
    pub parts: Vec<ResultPart>,
    /// The result-stage attempts whose output the job used.
    pub committed: Vec<TaskId>,
}

/// Where held rows are read from.
#[derive(Clone)]
pub enum ResultSource {
    /// One process: every executor's blocks are in this store.
    Store(Arc<BlockStore>),
    /// Executors in other processes, reached by executor id.
    Remote(Arc<dyn BlockFetcher>),
}

/// A job's rows, partition by partition, as they are read.
pub struct JobRows {
    result: JobResult,
    parts: VecDeque<ResultPart>,
    source: Option<ResultSource>,
    reading: Option<(usize, ExecutorId, FetchedBatches)>,
    /// Lets the held rows go: called once, when the stream ends or drops.
    release: Option<Box<dyn FnOnce() + Send>>,
    rows: u64,
}

impl std::fmt::Debug for JobRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "JobRows(job {}, {} rows in {} partitions)",
            self.result.job,
            self.rows,
            self.result.parts.len()
        )
    }
}

impl JobRows {
    /// The rows of `result`; held ones are read from `source`, and
    /// `release` lets them go.
    pub fn new(
        mut result: JobResult,
        source: Option<ResultSource>,
        release: impl FnOnce() + Send + 'static,
    ) -> Self {
        let parts: VecDeque<ResultPart> = std::mem::take(&mut result.parts).into();
        let rows = parts.iter().map(|p| p.output.direct_rows()).sum();
        let holds = parts
            .iter()
            .any(|p| matches!(p.output, ResultOutput::Held { .. }));
        Self {
            result,
            parts,
            source,
            reading: None,
            release: holds.then(|| Box::new(release) as Box<dyn FnOnce() + Send>),
            rows,
        }
    }

    /// Rows the driver made itself (a listing), in one partition.
    pub fn in_memory(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        let result = JobResult {
            job: 0,
            schema,
            stage: 0,
            parts: vec![ResultPart {
                partition: 0,
                executor: ExecutorId("driver".to_string()),
                output: ResultOutput::Direct(batches),
            }],
            committed: Vec::new(),
        };
        Self::new(result, None, || {})
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.result.schema
    }

    /// How many rows the stream holds in all, known before they are read.
    pub fn num_rows(&self) -> u64 {
        self.rows
    }

    /// The result-stage attempts whose output the job used.
    pub fn committed(&self) -> &[TaskId] {
        &self.result.committed
    }

    /// The next batch, in partition order; `None` once every row was read.
    /// An error ends the stream: the rows read so far are whole partitions
    /// and a part of the next, never rows of an attempt that failed.
    pub async fn next(&mut self) -> Option<Result<RecordBatch, JobError>> {
        loop {
            if let Some((partition, executor, batches)) = &mut self.reading {
                match batches.next().await {
                    Some(Ok(batch)) => return Some(Ok(batch)),
                    Some(Err(e)) => {
                        let lost = JobError::ResultLost {
                            job: self.result.job,
                            partition: *partition,
                            executor: executor.clone(),
                            why: e.to_string(),
                        };
                        self.finish();
                        return Some(Err(lost));
                    }
                    None => self.reading = None,
                }
            }
            let Some(part) = self.parts.pop_front() else {
                self.finish();
                return None;
            };
            match part.output {
                ResultOutput::Direct(batches) => {
                    // Batches of a direct part go back into the queue one
                    // by one; the first is handed over now.
                    let mut batches = batches.into_iter();
                    let Some(first) = batches.next() else {
                        continue;
                    };
                    let rest: Vec<RecordBatch> = batches.collect();
                    if !rest.is_empty() {
                        self.parts.push_front(ResultPart {
                            output: ResultOutput::Direct(rest),
                            ..part
                        });
                    }
                    return Some(Ok(first));
                }
                ResultOutput::Held { .. } => {
                    let block = result_block(self.result.stage, part.partition);
                    let opened = open(self.source.clone(), block, &part.executor).await;
                    match opened {
                        Ok(batches) => {
                            self.reading = Some((part.partition, part.executor, batches))
                        }
                        Err(why) => {
                            let lost = JobError::ResultLost {
                                job: self.result.job,
                                partition: part.partition,
                                executor: part.executor,
                                why,
                            };
                            self.finish();
                            return Some(Err(lost));
                        }
                    }
                }
            }
        }
    }
}

/// The batches of a held block, read where they are.
async fn open(
    source: Option<ResultSource>,
    block: ShuffleBlockId,
    executor: &ExecutorId,
) -> Result<FetchedBatches, String> {
    match &source {
        None => Err("this driver cannot read rows its executors hold".to_string()),
        Some(ResultSource::Store(store)) => {
            if !store.contains(block) {
                return Err("they are no longer there".to_string());
            }
            Ok(read_blocks(Arc::clone(store), vec![block])
                .map(|item| item.map_err(|(_, e)| e))
                .boxed())
        }
        Some(ResultSource::Remote(fetcher)) => fetcher
            .fetch(&executor.0, vec![block])
            .await
            .map_err(|e| e.to_string()),
    }
}

impl JobRows {
    /// Every row, gathered in memory.
    pub async fn collect(mut self) -> Result<JobOutput, JobError> {
        let mut batches = Vec::new();
        while let Some(batch) = self.next().await {
            batches.push(batch?);
        }
        Ok(JobOutput {
            schema: Arc::clone(&self.result.schema),
            batches,
            committed: std::mem::take(&mut self.result.committed),
        })
    }

    fn finish(&mut self) {
        self.parts.clear();
        self.reading = None;
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl Drop for JobRows {
    fn drop(&mut self) {
        self.finish();
    }
}
