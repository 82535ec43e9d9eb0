//! A result task's rows on their way to the driver. A small result (up to
//! [`DIRECT_RESULT_BYTES`]) travels with the task's status, as Spark's
//! direct task results do; a larger one stays with the executor that
//! computed it, written as a block of the result stage (in memory while
//! the shuffle budget allows, on disk past that), and the driver reads it
//! as a stream once the job has succeeded. The driver never holds more
//! than a few batches of a large result, whatever its size, and never
//! sees a row of an attempt that failed: only a finished attempt's block
//! is registered.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::runtime_env::RuntimeEnv;
use futures::StreamExt;

use super::compact::compact_views;
use super::output::MapOutputWriter;
use super::store::{ShuffleBlockId, ShuffleEnv};
use crate::stages::StageId;

/// The largest result a task sends with its status (Spark's
/// `spark.task.maxDirectResultSize` default, 1 MiB).
pub const DIRECT_RESULT_BYTES: usize = 1 << 20;

/// What a result task produced.
#[derive(Debug, Clone)]
pub enum ResultOutput {
    /// Its rows, sent with the task's status.
    Direct(Vec<RecordBatch>),
    /// Its rows stay with its executor as block [`result_block`]`(stage,
    /// partition)`; this many.
    Held { rows: u64 },
}

impl ResultOutput {
    /// Its rows, when they came with it.
    pub fn direct_rows(&self) -> u64 {
        match self {
            Self::Direct(batches) => batches.iter().map(|b| b.num_rows() as u64).sum(),
            Self::Held { rows } => *rows,
        }
    }
}

/// The block holding partition `partition` of result stage `stage`.
pub fn result_block(stage: StageId, partition: usize) -> ShuffleBlockId {
    ShuffleBlockId {
        stage,
        map: partition,
        reduce: 0,
    }
}

/// Runs a result task's `stream` to its end: its rows come back directly
/// while they are under `direct_limit` bytes, and are held in `env`'s
/// store past that.
pub async fn finish_result(
    mut stream: SendableRecordBatchStream,
    env: &ShuffleEnv,
    runtime: &Arc<RuntimeEnv>,
    (stage, partition): (StageId, usize),
    direct_limit: usize,
) -> Result<ResultOutput> {
    let schema = stream.schema();
    let mut direct = Vec::new();
    let mut bytes = 0;
    while let Some(batch) = stream.next().await {
        // Sent with the status, a batch should be the size of its rows.
        let batch = compact_views(batch?);
        bytes += rows_bytes(&batch);
        direct.push(batch);
        if bytes > direct_limit {
            break;
        }
    }
    if bytes <= direct_limit {
        return Ok(ResultOutput::Direct(direct));
    }
    let block = result_block(stage, partition);
    let mut output = MapOutputWriter::new(
        &schema,
        1,
        env.memory.clone(),
        env.compress,
        runtime,
        format!("result {stage}.{partition}"),
    );
    // The plan's batches are kept as they come: joining them would copy
    // every row of a result that may well stay in memory.
    output.open_passthrough(block.reduce);
    for batch in direct {
        output.push(block.reduce, batch)?;
    }
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if batch.num_rows() > 0 {
            output.push(block.reduce, batch)?;
        }
    }
    let (rows, held) = output.finish()?;
    env.store.put_map(stage, partition, held);
    Ok(ResultOutput::Held {
        rows: rows.iter().map(|r| r.rows).sum(),
    })
}

/// The bytes of a batch's own rows, not of the buffers they were sliced
/// from: the few rows of a top-N or a limit often point into whole
/// batches of thousands, and those few still belong with the status.
fn rows_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|column| {
            column
                .to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| column.get_array_memory_size())
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shuffle::store::BlockStore;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

    fn stream(batches: usize, rows: i64) -> SendableRecordBatchStream {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let items: Vec<Result<RecordBatch>> = (0..batches)
            .map(|b| {
                let start = b as i64 * rows;
                let column = Int64Array::from_iter_values(start..start + rows);
                Ok(RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(column)],
                )?)
            })
            .collect();
        Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(items),
        ))
    }

    #[tokio::test]
    async fn a_small_result_comes_back_and_a_large_one_is_held_whole() {
        let store = Arc::new(BlockStore::default());
        let env = ShuffleEnv::new(Arc::clone(&store)).with_memory(None);
        let runtime = Arc::new(RuntimeEnv::default());
        let small = finish_result(stream(2, 100), &env, &runtime, (7, 0), 1 << 20)
            .await
            .unwrap();
        assert!(matches!(&small, ResultOutput::Direct(b) if b.len() == 2));
        assert!(!store.contains(result_block(7, 0)));

        // 40 batches of 8,192 longs: 2.6 MB, over a 1 MB limit.
        let large = finish_result(stream(40, 8192), &env, &runtime, (7, 1), 1 << 20)
            .await
            .unwrap();
        assert!(matches!(large, ResultOutput::Held { rows } if rows == 40 * 8192));
        let mut next = 0i64;
        for batch in store.get(result_block(7, 1)).unwrap() {
            let batch = batch.unwrap();
            let values = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            for v in values.values() {
                assert_eq!(*v, next, "rows come back in the order they were produced");
                next += 1;
            }
        }
        assert_eq!(next, 40 * 8192);
        assert!(
            store.usage().disk_bytes > 0,
            "held without a memory budget: on disk"
        );
    }

    #[tokio::test]
    async fn a_few_rows_sliced_from_a_large_batch_come_back_directly() {
        // A top 20 of 300,000 rows: its batch is a slice of a 2.4 MB one.
        let store = Arc::new(BlockStore::default());
        let env = ShuffleEnv::new(Arc::clone(&store)).with_memory(None);
        let runtime = Arc::new(RuntimeEnv::default());
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let whole = Int64Array::from_iter_values(0..300_000);
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(whole)]).unwrap();
        let top = batch.slice(0, 20);
        let input = Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(vec![Ok(top)]),
        ));
        let result = finish_result(input, &env, &runtime, (3, 0), 1 << 20)
            .await
            .unwrap();
        assert!(matches!(&result, ResultOutput::Direct(b) if b[0].num_rows() == 20));
        assert!(!store.contains(result_block(3, 0)));
    }
}
