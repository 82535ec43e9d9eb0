//! Batches made to own their bytes before they leave a task. A string or
//! binary view column (DataFusion reads Parquet strings as `Utf8View`)
//! points into whole buffers of the batches it came from: a join's output
//! into the build side's strings, a top-N's twenty rows into every batch
//! it kept. Written as Arrow IPC such a column carries every buffer it
//! points into (2.6 MB for the twenty rows of TPC-H Q10's top-N), and held
//! in memory it keeps them alive. Copied, it is the size of its rows.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, GenericByteViewArray};
use datafusion::arrow::datatypes::{ByteViewType, DataType};
use datafusion::arrow::record_batch::RecordBatch;

/// Buffers may exceed what the rows use by this much before a copy pays.
const SLACK_BYTES: usize = 64 * 1024;

/// `batch` with each view column that points into far more bytes than its
/// rows use (over twice, and by more than [`SLACK_BYTES`]) copied into
/// buffers of its own; the batch as it is when none does.
pub fn compact_views(batch: RecordBatch) -> RecordBatch {
    let mut copied = false;
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|column| match compacted(column) {
            Some(own) => {
                copied = true;
                own
            }
            None => Arc::clone(column),
        })
        .collect();
    if !copied {
        return batch;
    }
    // Same schema, same row count: only the buffers behind the views moved.
    RecordBatch::try_new(batch.schema(), columns).unwrap_or(batch)
}

/// `column` copied into buffers of its own, if it is a view column that
/// wastes them.
fn compacted(column: &ArrayRef) -> Option<ArrayRef> {
    match column.data_type() {
        DataType::Utf8View => {
            let views = column.as_string_view();
            wastes(views).then(|| Arc::new(views.gc()) as ArrayRef)
        }
        DataType::BinaryView => {
            let views = column.as_binary_view();
            wastes(views).then(|| Arc::new(views.gc()) as ArrayRef)
        }
        _ => None,
    }
}

/// Whether `array`'s data buffers are far larger than its rows' values.
fn wastes<T: ByteViewType + ?Sized>(array: &GenericByteViewArray<T>) -> bool {
    let held: usize = array.data_buffers().iter().map(|b| b.len()).sum();
    if held <= SLACK_BYTES {
        return false;
    }
    // Values of up to 12 bytes sit in the view itself.
    let used: usize = array
        .views()
        .iter()
        .map(|&view| {
            // A view's low 32 bits are its value's length.
            let len = view as u32 as usize;
            if len > 12 { len } else { 0 }
        })
        .sum();
    held > 2 * used + SLACK_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringViewArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::ipc::writer::StreamWriter;

    fn ipc_bytes(batch: &RecordBatch) -> usize {
        let mut writer = StreamWriter::try_new(Vec::new(), &batch.schema()).unwrap();
        writer.write(batch).unwrap();
        writer.finish().unwrap();
        writer.into_inner().unwrap().len()
    }

    #[test]
    fn a_few_rows_of_a_large_view_column_travel_without_the_rest() {
        let strings: Vec<String> = (0..20_000)
            .map(|i| format!("a string longer than twelve bytes, number {i}"))
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8View, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringViewArray::from_iter_values(&strings)),
                Arc::new(Int64Array::from_iter_values(0..20_000)),
            ],
        )
        .unwrap();
        let top = batch.slice(100, 20);
        let before = ipc_bytes(&top);
        let compact = compact_views(top.clone());
        let after = ipc_bytes(&compact);
        assert!(before > 500_000, "the slice carries every buffer: {before}");
        assert!(after < 10_000, "20 rows on their own: {after}");
        assert_eq!(compact, top, "the same rows");
        // A whole batch uses its buffers: left as it is.
        let whole = compact_views(batch.clone());
        assert!(Arc::ptr_eq(whole.column(0), batch.column(0)));
    }
}
