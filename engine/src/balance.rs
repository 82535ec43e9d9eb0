//! Parquet scans split into partitions of even row counts. DataFusion cuts
//! a table's files into byte ranges of equal size, but a row group is read
//! whole by the range that holds its first byte, so a cut that lands just
//! past a row group's start hands that whole row group to one side: with
//! four equal files and two partitions, one partition reads three files.
//! In one process DataFusion's partitions steal files from each other and
//! even it out; Ember's tasks run apart, so the cut itself must be even.
//! Here the cuts are moved to row group starts, chosen from the footers so
//! that each partition reads about the same number of rows.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::listing::{FileRange, PartitionedFile};
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfig, FileScanConfigBuilder, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::session_state::SessionState;
use datafusion::physical_plan::ExecutionPlan;

/// One row group: where its first page starts in its file, and its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RowGroup {
    start: u64,
    rows: u64,
}

/// A file of the scan and its row groups, in file order.
struct ScannedFile {
    file: PartitionedFile,
    row_groups: Vec<RowGroup>,
}

/// `plan` with every Parquet scan's partitions re-cut at row group starts
/// when that evens out their rows. A scan is left as it is when its output
/// order matters, when a footer cannot be read (the scan reports that
/// itself), or when the new cut would not read fewer rows in the largest
/// partition.
pub async fn balance_parquet_scans(
    plan: Arc<dyn ExecutionPlan>,
    state: &SessionState,
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut scans = Vec::new();
    plan.apply(|node| {
        if let Some(config) = parquet_scan(node) {
            scans.push(config.clone());
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })?;
    let mut balanced = Vec::with_capacity(scans.len());
    for config in scans {
        balanced.push(balanced_groups(&config, state).await);
    }
    if balanced.iter().all(Option::is_none) {
        return Ok(plan);
    }
    // The same walk order as above: the n-th scan met gets the n-th answer.
    let mut next = balanced.into_iter();
    plan.transform_up(|node| {
        let Some(config) = parquet_scan(&node) else {
            return Ok(Transformed::no(node));
        };
        match next.next().flatten() {
            Some(groups) => {
                let config = FileScanConfigBuilder::from(config.clone())
                    .with_file_groups(groups)
                    .build();
                Ok(Transformed::yes(
                    DataSourceExec::from_data_source(config) as Arc<dyn ExecutionPlan>
                ))
            }
            None => Ok(Transformed::no(node)),
        }
    })
    .map(|t| t.data)
}

/// The scan configuration of a Parquet `DataSourceExec` whose partitions
/// may be re-cut: more than one, and no output order to keep.
fn parquet_scan(node: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    let exec = node.downcast_ref::<DataSourceExec>()?;
    let (config, _) = exec.downcast_to_file_source::<ParquetSource>()?;
    (config.file_groups.len() > 1 && config.output_ordering.is_empty()).then_some(config)
}

/// New partitions for `config`'s files with even row counts, or `None`
/// when the scan should stay as DataFusion cut it.
async fn balanced_groups(config: &FileScanConfig, state: &SessionState) -> Option<Vec<FileGroup>> {
    let files = whole_files(&config.file_groups)?;
    let store = state
        .runtime_env()
        .object_store(&config.object_store_url)
        .ok()?;
    let cache = state.runtime_env().cache_manager.get_file_metadata_cache();
    let mut scanned = Vec::with_capacity(files.len());
    for file in files {
        let metadata = DFParquetMetadata::new(store.as_ref(), &file.object_meta)
            .with_metadata_size_hint(file.metadata_size_hint)
            .with_file_metadata_cache(Some(Arc::clone(&cache)))
            .fetch_metadata()
            .await
            .ok()?;
        let row_groups = metadata
            .row_groups()
            .iter()
            .map(|group| {
                let first = group.column(0);
                let start = first
                    .dictionary_page_offset()
                    .unwrap_or_else(|| first.data_page_offset());
                RowGroup {
                    start: u64::try_from(start).unwrap_or(0),
                    rows: u64::try_from(group.num_rows()).unwrap_or(0),
                }
            })
            .collect();
        scanned.push(ScannedFile { file, row_groups });
    }
    let parts = config.file_groups.len();
    let now = largest_partition(&scanned, &config.file_groups);
    let groups = cut_files(&scanned, parts)?;
    let after = largest_partition(&scanned, &groups);
    tracing::debug!(
        rows_before = now,
        rows_after = after,
        parts,
        "parquet scan re-cut"
    );
    (after < now).then_some(groups)
}

/// The scan's files in order, each whole (without its range), when every
/// file is read exactly once, whole or in adjacent ranges, as DataFusion
/// cuts them; `None` for anything else.
fn whole_files(groups: &[FileGroup]) -> Option<Vec<PartitionedFile>> {
    // Each file once, whole, and how far into it the ranges so far reach.
    let mut files: Vec<(PartitionedFile, u64)> = Vec::new();
    for file in groups.iter().flat_map(FileGroup::iter) {
        let size = file.object_meta.size;
        let (start, end) = match &file.range {
            Some(range) => (
                u64::try_from(range.start).ok()?,
                u64::try_from(range.end).ok()?,
            ),
            None => (0, size),
        };
        let location = &file.object_meta.location;
        match files.last_mut() {
            Some((last, reached)) if &last.object_meta.location == location => {
                if *reached != start {
                    return None;
                }
                *reached = end;
            }
            _ => {
                if start != 0
                    || files
                        .iter()
                        .any(|(f, _)| &f.object_meta.location == location)
                {
                    return None;
                }
                let mut whole = file.clone();
                whole.range = None;
                files.push((whole, end));
            }
        }
    }
    files
        .into_iter()
        .map(|(file, reached)| (reached >= file.object_meta.size).then_some(file))
        .collect()
}

/// The rows of the largest of `groups`, as the Parquet reader would read
/// them: each row group by the range holding its first page.
fn largest_partition(files: &[ScannedFile], groups: &[FileGroup]) -> u64 {
    groups
        .iter()
        .map(|group| {
            group
                .iter()
                .map(|part| {
                    let Some(file) = files
                        .iter()
                        .find(|f| f.file.object_meta.location == part.object_meta.location)
                    else {
                        return 0;
                    };
                    let (start, end) = part.range();
                    file.row_groups
                        .iter()
                        .filter(|g| start <= g.start && g.start < end)
                        .map(|g| g.rows)
                        .sum::<u64>()
                })
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0)
}

/// `files` cut into `parts` groups of adjacent row groups with about the
/// same rows each; `None` when some group would be left empty.
fn cut_files(files: &[ScannedFile], parts: usize) -> Option<Vec<FileGroup>> {
    // Every row group in scan order, with the file it belongs to.
    let units: Vec<(usize, usize)> = files
        .iter()
        .enumerate()
        .flat_map(|(f, file)| (0..file.row_groups.len()).map(move |g| (f, g)))
        .collect();
    let rows: Vec<u64> = units
        .iter()
        .map(|&(f, g)| files[f].row_groups[g].rows)
        .collect();
    let bounds = even_cuts(&rows, parts)?;
    let mut groups = Vec::with_capacity(parts);
    for window in bounds.windows(2) {
        let mut group: Vec<PartitionedFile> = Vec::new();
        // The run's row groups, file by file: each file read from its
        // first row group here to the start of the next one not here.
        for run in units[window[0]..window[1]].chunk_by(|a, b| a.0 == b.0) {
            let (Some(&(f, first)), Some(&(_, last))) = (run.first(), run.last()) else {
                continue;
            };
            let file = &files[f];
            let size = file.file.object_meta.size;
            let start = if first == 0 {
                0
            } else {
                file.row_groups[first].start
            };
            let end = file
                .row_groups
                .get(last + 1)
                .map_or(size, |next| next.start);
            let mut part = file.file.clone();
            if start != 0 || end != size {
                part.range = Some(FileRange {
                    start: i64::try_from(start).ok()?,
                    end: i64::try_from(end).ok()?,
                });
            }
            group.push(part);
        }
        groups.push(group);
    }
    // Files without row groups have no rows; the first group lists them so
    // the scan still opens every file it was given (and reports a bad one).
    for file in files.iter().filter(|f| f.row_groups.is_empty()) {
        groups.first_mut()?.push(file.file.clone());
    }
    Some(groups.into_iter().map(FileGroup::new).collect())
}

/// Where to cut `rows` into `parts` adjacent runs of about equal sums: the
/// run boundaries, from 0 to `rows.len()`; `None` when a run would be empty.
fn even_cuts(rows: &[u64], parts: usize) -> Option<Vec<usize>> {
    if parts == 0 || rows.len() < parts {
        return None;
    }
    let total: u64 = rows.iter().sum();
    let mut prefix = Vec::with_capacity(rows.len() + 1);
    prefix.push(0u64);
    for &r in rows {
        prefix.push(prefix.last().copied().unwrap_or(0) + r);
    }
    let mut bounds = vec![0usize];
    for k in 1..parts {
        let target = total as f64 * k as f64 / parts as f64;
        let previous = *bounds.last()?;
        // The boundary closest to the target, leaving at least one row
        // group for this run and for each run after it.
        let lowest = previous + 1;
        let highest = rows.len() - (parts - k);
        let best = (lowest..=highest).min_by(|&a, &b| {
            let da = (prefix[a] as f64 - target).abs();
            let db = (prefix[b] as f64 - target).abs();
            da.total_cmp(&db)
        })?;
        bounds.push(best);
    }
    bounds.push(rows.len());
    Some(bounds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_fall_where_the_rows_are_even() {
        // Four files of a big and a small row group each: 1.05M + 0.45M.
        let rows = [105, 45, 105, 45, 105, 45, 105, 45];
        assert_eq!(even_cuts(&rows, 2), Some(vec![0, 4, 8]));
        assert_eq!(even_cuts(&rows, 3), Some(vec![0, 2, 5, 8]));
        assert_eq!(even_cuts(&[10, 10, 10, 10], 4), Some(vec![0, 1, 2, 3, 4]));
        // One huge row group: the runs still get one each.
        assert_eq!(even_cuts(&[1000, 1, 1], 3), Some(vec![0, 1, 2, 3]));
        assert_eq!(even_cuts(&[1000, 1, 1], 2), Some(vec![0, 1, 3]));
        // Fewer row groups than partitions: not cut.
        assert_eq!(even_cuts(&[10], 2), None);
    }

    fn scanned(name: &str, size: u64, groups: &[(u64, u64)]) -> ScannedFile {
        ScannedFile {
            file: PartitionedFile::new(name, size),
            row_groups: groups
                .iter()
                .map(|&(start, rows)| RowGroup { start, rows })
                .collect(),
        }
    }

    /// Each group's files: name and byte range, if any.
    type Listing = Vec<Vec<(String, Option<(i64, i64)>)>>;

    fn ranges(groups: &[FileGroup]) -> Listing {
        groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|f| {
                        (
                            f.object_meta.location.to_string(),
                            f.range.as_ref().map(|r| (r.start, r.end)),
                        )
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn byte_cuts_past_a_row_group_start_are_moved_to_row_group_starts() {
        // DataFusion's cut of four equal files in two: part of c's header
        // goes left, so c's first row group (starting at byte 4) does too.
        let files: Vec<ScannedFile> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| scanned(n, 1000, &[(4, 70), (700, 30)]))
            .collect();
        let datafusion = vec![
            FileGroup::new(vec![
                files[0].file.clone(),
                files[1].file.clone(),
                files[2].file.clone().with_range(0, 10),
            ]),
            FileGroup::new(vec![
                files[2].file.clone().with_range(10, 1000),
                files[3].file.clone(),
            ]),
        ];
        assert_eq!(largest_partition(&files, &datafusion), 270);
        let balanced = cut_files(&files, 2).unwrap();
        assert_eq!(largest_partition(&files, &balanced), 200);
        assert_eq!(
            ranges(&balanced),
            vec![
                vec![("a".into(), None), ("b".into(), None)],
                vec![("c".into(), None), ("d".into(), None)],
            ]
        );
        // Three partitions: files are cut at row group starts.
        let three = cut_files(&files, 3).unwrap();
        assert_eq!(
            ranges(&three),
            vec![
                vec![("a".into(), None)],
                vec![("b".into(), None), ("c".into(), Some((0, 700)))],
                vec![("c".into(), Some((700, 1000))), ("d".into(), None)],
            ]
        );
        let whole = whole_files(&datafusion).unwrap();
        assert_eq!(whole.len(), 4);
        assert!(whole.iter().all(|f| f.range.is_none()));
    }

    #[test]
    fn scans_not_read_whole_and_in_order_are_left_alone() {
        let a = PartitionedFile::new("a", 100);
        let gap = vec![
            FileGroup::new(vec![a.clone().with_range(0, 40)]),
            FileGroup::new(vec![a.clone().with_range(50, 100)]),
        ];
        assert!(whole_files(&gap).is_none());
        let twice = vec![FileGroup::new(vec![a.clone()]), FileGroup::new(vec![a])];
        assert!(whole_files(&twice).is_none());
    }

    /// Rows of each partition of the plan's scan, executed as tasks are.
    async fn rows_per_partition(
        plan: &Arc<dyn ExecutionPlan>,
        ctx: &datafusion::prelude::SessionContext,
    ) -> Vec<Vec<i64>> {
        use datafusion::arrow::array::{Array, Int64Array};
        use datafusion::physical_plan::ExecutionPlanProperties;
        let mut parts = Vec::new();
        for p in 0..plan.output_partitioning().partition_count() {
            let stream = plan.execute(p, ctx.task_ctx()).unwrap();
            let batches = datafusion::physical_plan::common::collect(stream)
                .await
                .unwrap();
            let mut values = Vec::new();
            for batch in batches {
                let column = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                values.extend((0..column.len()).map(|i| column.value(i)));
            }
            parts.push(values);
        }
        parts
    }

    #[tokio::test]
    async fn a_re_cut_scan_reads_every_row_once_and_more_evenly() {
        use datafusion::arrow::array::Int64Array;
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use datafusion::arrow::record_batch::RecordBatch;
        use datafusion::parquet::arrow::ArrowWriter;
        use datafusion::parquet::file::properties::WriterProperties;
        use datafusion::physical_plan::ExecutionPlanProperties;
        use datafusion::prelude::SessionContext;

        // Three files of 2,500 rows in row groups of 1,000, 1,000 and 500.
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        for f in 0..3i64 {
            let file = std::fs::File::create(dir.path().join(format!("part-{f}.parquet"))).unwrap();
            let properties = WriterProperties::builder()
                .set_max_row_group_row_count(Some(1000))
                .build();
            let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(properties)).unwrap();
            let values = Int64Array::from_iter_values(f * 2500..(f + 1) * 2500);
            let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(values)]).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
        }
        // Ember's settings: partitions do not steal files from each other.
        let mut config = crate::session::planning_config(2);
        config.options_mut().optimizer.repartition_file_min_size = 0;
        let ctx = SessionContext::new_with_config(config);
        ctx.register_parquet("t", dir.path().to_str().unwrap(), Default::default())
            .await
            .unwrap();
        let plan = crate::testing::physical(&ctx, "SELECT v FROM t").await;
        assert_eq!(plan.output_partitioning().partition_count(), 2);
        let before = rows_per_partition(&plan, &ctx).await;
        let balanced = balance_parquet_scans(Arc::clone(&plan), &ctx.state())
            .await
            .unwrap();
        let after = rows_per_partition(&balanced, &ctx).await;
        let largest = |parts: &[Vec<i64>]| parts.iter().map(Vec::len).max().unwrap();
        // DataFusion's byte cut in the middle of the second file hands
        // whole row groups past the middle to the first partition.
        assert!(
            largest(&before) >= 4500,
            "{:?}",
            before.iter().map(Vec::len).collect::<Vec<_>>()
        );
        assert_eq!(largest(&after), 4000);
        let mut all: Vec<i64> = after.concat();
        all.sort_unstable();
        assert_eq!(all, (0..7500).collect::<Vec<i64>>());
    }
}
