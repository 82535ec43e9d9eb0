//! Data bigger than memory: a sort and a high-cardinality group-by over
//! input four times the executors' memory budget complete, in `local[2]`
//! and on a loopback cluster, with the answers of single-partition
//! DataFusion, while each process stays within 1.5 × its budget plus a
//! fixed overhead; and a shuffle that fills the disk quota fails cleanly.

use ember_testkit::BoundedCommand;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionConfig, SessionContext};
use ember_testkit::{run_measured, run_measured_into};
use futures::StreamExt;

use crate::cluster::Cluster;
use crate::support::text;

/// 22M view rows: 820 MB of CSV, over 1 GB as Arrow batches.
const ROWS: u64 = 22_000_000;
/// What a process takes besides its memory budget, whatever the data: the
/// binary and its runtime (~70 MB), I/O buffers and batches in flight
/// between operators (~100 MB), and memory the allocator keeps for a second
/// after it is freed, so that bursts of allocations are not handed back and
/// forth to the kernel (up to ~200 MB on this 2-core machine; it follows
/// the rate of allocation, not the size of the data;
/// `MIMALLOC_PURGE_DELAY=0` gives it back at once, at some cost in speed).
const OVERHEAD: u64 = 384 << 20;

fn ember() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ember"))
}

/// The views data set, generated once into the target directory (the same
/// seed gives the same files every time).
fn views() -> PathBuf {
    static MADE: Mutex<()> = Mutex::new(());
    let _one = MADE.lock().unwrap_or_else(|p| p.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("views-22m");
    let done = dir.join(".complete");
    if !done.exists() {
        let out = std::process::Command::new(ember())
            .args(["gen", "views", "--force", "--files", "8", "--rows"])
            .arg(ROWS.to_string())
            .arg("--out")
            .arg(&dir)
            .bounded_output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        std::fs::write(&done, b"").unwrap();
    }
    dir
}

/// A sort of every row and a group-by with about one group per row, both
/// written to Parquet under `out`.
fn job(data: &Path, out: &Path) -> String {
    format!(
        "CREATE EXTERNAL TABLE views STORED AS CSV LOCATION '{data}/' OPTIONS ('format.has_header' 'true');\n\
         COPY (SELECT * FROM views ORDER BY user_id, event_time, video_id, watch_seconds, country) \
         TO '{out}/sorted/' STORED AS PARQUET;\n\
         COPY ({GROUP_BY}) TO '{out}/grouped/' STORED AS PARQUET;\n",
        data = data.display(),
        out = out.display()
    )
}

/// The group-by, about one group per row.
const GROUP_BY: &str = "SELECT user_id, event_time, count(*) AS n, sum(watch_seconds) AS w \
                        FROM views GROUP BY user_id, event_time";

/// Strings in one representation, so the same rows digest the same
/// whichever reader produced them.
fn normalized(batch: &RecordBatch) -> Vec<ArrayRef> {
    batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Utf8View | DataType::LargeUtf8 => cast(c, &DataType::Utf8).unwrap(),
            _ => Arc::clone(c),
        })
        .collect()
}

/// Rows as comparable bytes, in the order `columns` lists them.
fn converter(columns: &[ArrayRef]) -> RowConverter {
    RowConverter::new(
        columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )
    .unwrap()
}

/// An order-free digest of a multiset of rows: how many, and the wrapping
/// sums of two hashes of each.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Digest {
    rows: u64,
    sum: u64,
    sum_of_squares: u64,
}

impl Digest {
    fn add(&mut self, batches: &[RecordBatch]) {
        for batch in batches {
            let columns = normalized(batch);
            let rows = converter(&columns).convert_columns(&columns).unwrap();
            for row in rows.iter() {
                let mut hasher = DefaultHasher::new();
                row.as_ref().hash(&mut hasher);
                let h = hasher.finish();
                self.rows += 1;
                self.sum = self.sum.wrapping_add(h);
                self.sum_of_squares = self.sum_of_squares.wrapping_add(h.wrapping_mul(h));
            }
        }
    }
}

fn single_partition() -> SessionContext {
    SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1))
}

/// What single-partition DataFusion answers: the digest of every input
/// row (the sort's rows, in any order) and of the group-by's rows.
async fn reference(data: &Path) -> &'static Reference {
    static ANSWERS: tokio::sync::OnceCell<Reference> = tokio::sync::OnceCell::const_new();
    ANSWERS
        .get_or_init(|| async {
            let ctx = single_partition();
            let csv = CsvReadOptions::new().has_header(true);
            ctx.register_csv("views", &format!("{}/", data.display()), csv)
                .await
                .unwrap();
            let (rows, input_bytes) = digest(&ctx, "SELECT * FROM views").await;
            let (groups, _) = digest(&ctx, GROUP_BY).await;
            Reference {
                rows,
                groups,
                input_bytes,
            }
        })
        .await
}

/// The digest of `sql`'s rows, taken as they stream, and the bytes of
/// Arrow batches they came in.
async fn digest(ctx: &SessionContext, sql: &str) -> (Digest, u64) {
    let mut rows = ctx.sql(sql).await.unwrap().execute_stream().await.unwrap();
    let mut digest = Digest::default();
    let mut bytes = 0;
    while let Some(batch) = rows.next().await {
        let batch = batch.unwrap();
        bytes += batch.get_array_memory_size() as u64;
        digest.add(&[batch]);
    }
    (digest, bytes)
}

/// Single-partition DataFusion's answers, and how much memory the input
/// takes as Arrow batches.
struct Reference {
    rows: Digest,
    groups: Digest,
    input_bytes: u64,
}

/// Checks Ember's output under `out` against single-partition DataFusion:
/// every sorted file in order, and the same rows and groups.
async fn check_answers(data: &Path, out: &Path) {
    let ctx = single_partition();
    let mut sorted_rows = Digest::default();
    let mut files = crate::support::files_under(&out.join("sorted"));
    files.retain(|f| f.extension().is_some_and(|e| e == "parquet"));
    assert!(
        !files.is_empty(),
        "no sorted output under {}",
        out.display()
    );
    for file in files {
        let batches = ctx
            .read_parquet(file.display().to_string(), ParquetReadOptions::default())
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        // Within each file, rows come in the order asked for.
        let mut last: Option<Vec<u8>> = None;
        for batch in &batches {
            let columns = normalized(batch);
            // user_id, event_time, video_id, watch_seconds, country.
            let keys: Vec<ArrayRef> = [1, 0, 2, 3, 4]
                .iter()
                .map(|i| Arc::clone(&columns[*i]))
                .collect();
            let rows = converter(&keys).convert_columns(&keys).unwrap();
            for row in rows.iter() {
                if let Some(previous) = &last {
                    assert!(
                        previous.as_slice() <= row.as_ref(),
                        "{} is out of order",
                        file.display()
                    );
                }
                last = Some(row.as_ref().to_vec());
            }
        }
        sorted_rows.add(&batches);
    }
    let grouped = ctx
        .read_parquet(
            format!("{}/grouped/", out.display()),
            ParquetReadOptions::default(),
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut groups = Digest::default();
    groups.add(&grouped);
    let expected = reference(data).await;
    assert_eq!(sorted_rows.rows, ROWS);
    assert_eq!(sorted_rows, expected.rows, "the sorted rows differ");
    assert!(groups.rows > ROWS * 9 / 10, "{groups:?}");
    assert_eq!(groups, expected.groups, "the groups differ");
}

fn mb(bytes: u64) -> u64 {
    bytes >> 20
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sort_and_a_group_by_four_times_the_budget_complete_in_local_mode() {
    const BUDGET: u64 = 192 << 20;
    let data = views();
    let input = reference(&data).await.input_bytes;
    assert!(input >= 4 * BUDGET, "input {} MB", mb(input));
    let out = tempfile::tempdir().unwrap();
    let script = out.path().join("job.sql");
    std::fs::write(&script, job(&data, out.path())).unwrap();
    let spill = out.path().join("spill");
    let turn = crate::cluster::ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let run = run_measured(
        std::process::Command::new(ember())
            .args(["submit", "--master", "local[2]", "--driver-memory", "192m"])
            .arg(format!(
                "--conf=datafusion.runtime.temp_directory={}",
                spill.display()
            ))
            .arg(&script),
    )
    .unwrap();
    drop(turn);
    assert!(run.output.status.success(), "{}", text(&run.output.stderr));
    let bound = BUDGET * 3 / 2 + OVERHEAD;
    assert!(
        run.peak_rss <= bound,
        "peak RSS {} MB over {} MB (1.5 × the 192 MB budget + {} MB)",
        mb(run.peak_rss),
        mb(bound),
        mb(OVERHEAD)
    );
    // Less than the data: it was never all in memory.
    assert!(bound < input);
    // Spill and shuffle files went with the process.
    assert_eq!(
        crate::support::files_under(&spill),
        Vec::<PathBuf>::new(),
        "left in the spill directory"
    );
    check_answers(&data, out.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sort_and_a_group_by_four_times_the_budget_complete_on_a_cluster() {
    const PER_EXECUTOR: u64 = 96 << 20;
    const EXECUTORS: u64 = 2;
    let data = views();
    let input = reference(&data).await.input_bytes;
    assert!(
        input >= 4 * EXECUTORS * PER_EXECUTOR,
        "input {} MB",
        mb(input)
    );
    let cluster = Cluster::start();
    let out = tempfile::tempdir().unwrap();
    let script = cluster.job("big.sql", &job(&data, out.path()));
    let run = run_measured(&mut cluster.ember(&[
        "submit",
        "--name",
        "bigger-than-memory",
        "--total-executor-cores",
        "2",
        "--executor-memory",
        "96m",
        script.to_str().unwrap(),
    ]))
    .unwrap();
    assert!(run.output.status.success(), "{}", text(&run.output.stderr));
    // The driver holds no data of its own here.
    assert!(
        run.peak_rss <= OVERHEAD,
        "driver peak RSS {} MB",
        mb(run.peak_rss)
    );
    let status = cluster.status();
    let app = ember_testkit::app(&status, "bigger-than-memory").unwrap();
    let executors: Vec<&serde_json::Value> = app["executors"]
        .as_array()
        .into_iter()
        .chain(app["removed_executors"].as_array())
        .flatten()
        .collect();
    assert_eq!(executors.len(), 2, "{app:#}");
    let bound = PER_EXECUTOR * 3 / 2 + OVERHEAD;
    let mut spilled = 0;
    for executor in &executors {
        let usage = &executor["usage"];
        let rss = usage["peak_rss"].as_u64().unwrap_or_default();
        assert!(rss > 0, "no usage reported: {executor:#}");
        assert!(
            rss <= bound,
            "executor peak RSS {} MB over {} MB (1.5 × 96 MB + {} MB)",
            mb(rss),
            mb(bound),
            mb(OVERHEAD)
        );
        assert_eq!(usage["memory_limit"].as_u64(), Some(PER_EXECUTOR));
        spilled += usage["spilled_bytes"].as_u64().unwrap_or_default();
    }
    assert!(spilled > 0, "nothing spilled: {executors:#?}");
    check_answers(&data, out.path()).await;
}

/// Rows of `PAD` bytes each, `PARTS` partitions of them: over 1 GB as
/// Arrow batches, made where they are needed rather than read.
const WIDE_ROWS: u64 = 2_000_000;
const PAD: usize = 500;
const PARTS: u64 = 4;

/// A query returning [`WIDE_ROWS`] rows numbered from 1, each padded.
fn wide_rows() -> String {
    let per = WIDE_ROWS / PARTS;
    let parts: Vec<String> = (0..PARTS)
        .map(|p| {
            format!(
                "SELECT value AS n, repeat('x', {PAD}) AS padding FROM generate_series({}, {})",
                p * per + 1,
                (p + 1) * per
            )
        })
        .collect();
    format!("{};\n", parts.join(" UNION ALL "))
}

/// Checks the JSON lines `ember submit` printed: every number from 1 to
/// [`WIDE_ROWS`] once, each row padded in full.
fn check_wide_rows(file: &Path) {
    use std::io::BufRead;
    let lines = std::io::BufReader::new(std::fs::File::open(file).unwrap()).lines();
    let (mut rows, mut sum, mut squares) = (0u64, 0u64, 0u64);
    for line in lines {
        let row: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        let n = row["n"].as_u64().unwrap();
        assert_eq!(row["padding"].as_str().map(str::len), Some(PAD), "{n}");
        rows += 1;
        sum += n;
        squares = squares.wrapping_add(n * n);
    }
    let all = WIDE_ROWS;
    assert_eq!(rows, all);
    assert_eq!(sum, all * (all + 1) / 2, "the numbers differ");
    assert_eq!(
        squares,
        (1..=all).map(|n| n * n).fold(0u64, u64::wrapping_add),
        "the numbers differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_bigger_than_memory_streams_through_the_driver() {
    const BUDGET: u64 = 256 << 20;
    let result_bytes = WIDE_ROWS * PAD as u64;
    let out = tempfile::tempdir().unwrap();
    let script = out.path().join("wide.sql");
    std::fs::write(&script, wide_rows()).unwrap();

    // Local mode: the driver and its executors share the 256 MB budget.
    let printed = out.path().join("local.json");
    let turn = crate::cluster::ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let run = run_measured_into(
        std::process::Command::new(ember())
            .args(["submit", "--master", "local[2]", "--driver-memory", "256m"])
            .args(["--format", "json"])
            .arg(&script),
        std::fs::File::create(&printed).unwrap(),
    )
    .unwrap();
    drop(turn);
    assert!(run.output.status.success(), "{}", text(&run.output.stderr));
    let bound = BUDGET * 3 / 2 + OVERHEAD;
    assert!(
        bound < result_bytes,
        "the rows would fit: the test proves nothing"
    );
    assert!(
        run.peak_rss <= bound,
        "peak RSS {} MB over {} MB while printing {} MB of rows",
        mb(run.peak_rss),
        mb(bound),
        mb(result_bytes)
    );
    check_wide_rows(&printed);
    std::fs::remove_file(&printed).unwrap();

    // Client mode: the rows come from the executors through a driver that
    // holds no data of its own.
    let cluster = Cluster::start();
    let script = cluster.job("wide.sql", &wide_rows());
    let printed = out.path().join("client.json");
    let run = run_measured_into(
        &mut cluster.ember(&[
            "submit",
            "--name",
            "print-everything",
            "--total-executor-cores",
            "2",
            "--format",
            "json",
            script.to_str().unwrap(),
        ]),
        std::fs::File::create(&printed).unwrap(),
    )
    .unwrap();
    assert!(run.output.status.success(), "{}", text(&run.output.stderr));
    assert!(
        run.peak_rss <= OVERHEAD,
        "client-mode driver peak RSS {} MB while printing {} MB of rows",
        mb(run.peak_rss),
        mb(result_bytes)
    );
    check_wide_rows(&printed);
}

#[test]
fn a_shuffle_that_fills_the_disk_quota_fails_naming_the_setting_and_leaves_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("views");
    let out = std::process::Command::new(ember())
        .args(["gen", "views", "--rows", "1000000", "--files", "2", "--out"])
        .arg(&data)
        .bounded_output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let spill = dir.path().join("spill");
    let script = dir.path().join("job.sql");
    std::fs::write(
        &script,
        format!(
            "CREATE EXTERNAL TABLE views STORED AS CSV LOCATION '{}/' OPTIONS ('format.has_header' 'true');\n\
             SELECT count(*) FROM (SELECT user_id, event_time, count(*) FROM views GROUP BY user_id, event_time);\n",
            data.display()
        ),
    )
    .unwrap();
    // Shuffle blocks stay in memory up to a quarter of the budget: with
    // 8 MB, most of the map output goes to disk, which has room for 1 MB.
    let out = std::process::Command::new(ember())
        .args(["submit", "--master", "local[2]", "--driver-memory", "32m"])
        .arg(format!(
            "--conf=datafusion.runtime.temp_directory={}",
            spill.display()
        ))
        .arg("--conf=datafusion.runtime.max_temp_directory_size=1M")
        .arg(&script)
        .bounded_output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("datafusion.runtime.max_temp_directory_size"),
        "{stderr}"
    );
    assert!(stderr.contains("shuffle map output"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        crate::support::files_under(&spill),
        Vec::<PathBuf>::new(),
        "shuffle files left behind"
    );
    // A bad quota is refused before anything runs.
    let out = std::process::Command::new(ember())
        .args(["submit", "--master", "local[2]"])
        .arg("--conf=datafusion.runtime.max_temp_directory_size=lots")
        .arg(&script)
        .bounded_output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("such as 512M"), "{stderr}");
}
