//! Streaming throughput and latency against Apache Spark Structured
//! Streaming (PySpark from PyPI, in a venv under the target dir), both
//! `local[2]` on this machine, one after the other in one run:
//!
//! - **stateless**: the rate source, `WHERE value % 3 <> 0` and a
//!   projection, into Parquet, default trigger. Spark runs
//!   `benches/spark_streaming.py`: its `rate-micro-batch` source, batches
//!   of 2M rows back to back. Ember's rate source has no batch size: each
//!   batch takes every row due since the last one, and with the default
//!   trigger a batch starts as soon as the one before ended, so Ember is
//!   never idle: below what it can do, its batches settle at the size it
//!   handles at the rate; above, they grow by the rate over its throughput
//!   each batch (at 500M rows/s the fourth batch held 2 billion rows and
//!   ran 89 s). So Ember runs four times: a 2-second probe at 50M rows/s
//!   (the fastest rows per second of processing a batch shows); saturated,
//!   at 1.2 times that (Ember is the bottleneck, batches grow slowly); a
//!   3-second pilot at half of it (small settled batches); and at the rate
//!   whose batches settle at Spark's 2M rows, from the line through the
//!   pilot's and the saturated run's mean batch (rows against seconds from
//!   the end of the batch before). The ratio to Spark is the last run's:
//!   the same batch size. The saturated figure is printed too.
//! - **window**: the same, with a watermark of 10 s, a count per 1-minute
//!   window and `value % 100`, output mode append.
//! - **latency**: the stateless query at 1M rows/s. Row `v` of the rate
//!   source is due at `origin + v / rate` and visible once its batch is
//!   committed; a batch's rows are spread evenly between its first and
//!   last row's due time, so per-row latency percentiles are computed
//!   exactly over every measured row. Spark's plain rate source makes a
//!   batch of a second's rows each second; its batch durations are the
//!   lower bound of its per-row latency and are what is reported for it.
//! - **kafka**: JSON records (about 100 bytes) in a 2-partition topic of a
//!   tansu broker on loopback, read by one `TRIGGER AVAILABLE NOW` query
//!   into Parquet: rows and value megabytes per second of batch time.
//!   Ember only: Spark's Kafka connector is not on PyPI.
//!
//! Ember's figures come from the checkpoint: `progress` (read every 200 ms
//! while the query runs, since it keeps the last 100 batches) and
//! `offsets/N`. The first batches, for `EMBER_BENCH_WARMUP` seconds after
//! the first one ends, are left out; a measured batch starts when the one
//! before it ended. Spark's are from its progress reports, after its own
//! 10 s warm-up (the JIT needs it). Every Ember output is read back with
//! `ember submit` and checked: the stateless rows are exactly the due rows
//! that pass the filter; the window counts in the output and in the last
//! state add up to the rows taken; the Kafka rows are the records, once.
//! A missed target is printed, not a failure.
//!
//! `cargo bench --bench streaming`; `EMBER_BENCH_PART` is `stateless`,
//! `window`, `latency` or `kafka` (default all), `EMBER_BENCH_SECONDS` the
//! measured seconds of each run (20), `EMBER_BENCH_WARMUP` Ember's warm-up
//! seconds (2), `EMBER_BENCH_RATE` the latency run's rows per second
//! (1000000), `EMBER_BENCH_KAFKA_RECORDS` the records produced (500000),
//! `EMBER_BENCH_SPARK=0` leaves Spark out, `EMBER_BENCH_BINARY` runs
//! another `ember`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{Array, Int64Array};
use ember_engine::stream_state::store;
use ember_testkit::env_or;
use serde_json::Value;

/// The PySpark release the baseline runs.
const PYSPARK: &str = "pyspark==4.3.0";

/// Rows per batch of Spark's `rate-micro-batch` runs (its script's default).
const SPARK_BATCH_ROWS: u64 = 2_000_000;

/// The probe run's rate: above what two cores do, so its batches grow.
const PROBE_RATE: u64 = 50_000_000;

/// The saturated run's rate over the fastest the probe saw.
const OVERDRIVE: f64 = 1.2;

/// Issue targets.
const THROUGHPUT_TARGET: f64 = 1.5;
const LATENCY_P50_TARGET_MS: f64 = 100.0;
const LATENCY_P99_TARGET_MS: f64 = 300.0;

const STATELESS: &str =
    "SELECT value, timestamp, value * 2 AS doubled FROM ticks WHERE value % 3 <> 0";
const WINDOW: &str = "SELECT date_bin(INTERVAL '1 minute', timestamp) AS window_start, \
                      value % 100 AS key, count(*) AS n FROM ticks \
                      GROUP BY date_bin(INTERVAL '1 minute', timestamp), value % 100";

fn ember() -> &'static Path {
    ember_testkit::bench_binary(env!("CARGO_BIN_EXE_ember"))
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// A child process killed (by its PID) if the bench stops early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Rows `start..end` of the rate source; row `v` is due at
/// `origin + v * 1e6 / rows_per_second` microseconds.
#[derive(Clone, Copy)]
struct RateRows {
    start: u64,
    end: u64,
    origin: i64,
    rows_per_second: u64,
}

impl RateRows {
    fn due(&self, v: u64) -> i64 {
        self.origin + (u128::from(v) * 1_000_000 / u128::from(self.rows_per_second)) as i64
    }
}

/// One committed batch, from the checkpoint.
#[derive(Clone)]
struct Batch {
    id: u64,
    ended: i64,
    input_rows: u64,
    output_rows: u64,
    duration_ms: f64,
    state_rows: u64,
    rate: Option<RateRows>,
}

/// One `ember submit` of a streaming query.
struct EmberRun {
    /// Every committed batch, in order.
    batches: Vec<Batch>,
    /// When the process was started (microseconds since the epoch).
    spawned: i64,
    /// Process start to exit.
    secs: f64,
    error: Option<String>,
}

impl EmberRun {
    /// Process start to the first batch's commit.
    fn startup_secs(&self) -> Option<f64> {
        self.batches
            .first()
            .map(|b| (b.ended - self.spawned) as f64 / 1e6)
    }

    fn last_state(&self) -> Option<u64> {
        self.batches.last().map(|b| b.state_rows)
    }
}

/// Reads the progress lines of `ckpt` into `into`, by batch id.
fn read_progress(ckpt: &Path, into: &mut BTreeMap<u64, Value>) {
    let Ok(text) = std::fs::read_to_string(ckpt.join("progress")) else {
        return;
    };
    for line in text.lines() {
        if let Ok(entry) = serde_json::from_str::<Value>(line)
            && let Some(id) = entry["batch"].as_u64()
        {
            into.insert(id, entry);
        }
    }
}

fn rate_rows(ckpt: &Path, batch: u64) -> Option<RateRows> {
    let text = std::fs::read_to_string(ckpt.join("offsets").join(batch.to_string())).ok()?;
    let offsets: Value = serde_json::from_str(&text).ok()?;
    let rate = offsets["sources"]
        .as_object()?
        .values()
        .find_map(|s| s.get("rate"))?;
    Some(RateRows {
        start: rate["start"].as_u64()?,
        end: rate["end"].as_u64()?,
        origin: rate["origin_micros"].as_i64()?,
        rows_per_second: rate["rows_per_second"].as_u64()?,
    })
}

/// Runs `script` with `ember submit --master local[2]` in `dir`, reading
/// `ckpt`'s progress while it runs; kills it after `limit`.
fn run_stream(dir: &Path, script: &str, ckpt: &Path, limit: Duration) -> EmberRun {
    let job = dir.join("job.sql");
    std::fs::write(&job, script).unwrap();
    let stderr_path = dir.join("stderr");
    let spawned = now_micros();
    let started = Instant::now();
    let mut child = Running(
        Command::new(ember())
            .args(["submit", "--master", "local[2]"])
            .arg(&job)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut progress = BTreeMap::new();
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        read_progress(ckpt, &mut progress);
        if started.elapsed() > limit && !killed {
            eprintln!("ember ran past {limit:?}: killing it");
            let _ = child.0.kill();
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let secs = started.elapsed().as_secs_f64();
    read_progress(ckpt, &mut progress);
    let batches = progress
        .into_iter()
        .map(|(id, p)| Batch {
            id,
            ended: p["ended_micros"].as_i64().unwrap_or_default(),
            input_rows: p["input_rows"].as_u64().unwrap_or_default(),
            output_rows: p["output_rows"].as_u64().unwrap_or_default(),
            duration_ms: p["duration"].as_f64().unwrap_or_default(),
            state_rows: p["state_rows"].as_u64().unwrap_or_default(),
            rate: rate_rows(ckpt, id),
        })
        .collect();
    let error = if killed {
        Some(format!("killed after {limit:?}"))
    } else if status.success() {
        None
    } else {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        Some(last_lines(&stderr, 5))
    };
    EmberRun {
        batches,
        spawned,
        secs,
        error,
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// The batches after the warm-up, and when the first of them started
/// (the end of the batch before it).
fn measured(batches: &[Batch], warmup: f64) -> (i64, &[Batch]) {
    let Some(first) = batches.first() else {
        return (0, &[]);
    };
    let from = first.ended + (warmup * 1e6) as i64;
    match (1..batches.len()).find(|&i| batches[i - 1].ended >= from) {
        Some(i) => (batches[i - 1].ended, &batches[i..]),
        None => (0, &[]),
    }
}

/// What the measured batches of a run did.
struct Figures {
    batches: usize,
    rows: u64,
    wall_secs: f64,
    rows_per_second: f64,
    batch_rows_p50: f64,
    batch_ms_p50: f64,
    batch_ms_p99: f64,
}

fn figures(run: &EmberRun, warmup: f64) -> Option<Figures> {
    let (start, batches) = measured(&run.batches, warmup);
    let last = batches.last()?;
    let rows: u64 = batches.iter().map(|b| b.input_rows).sum();
    let wall_secs = (last.ended - start) as f64 / 1e6;
    let durations: Vec<f64> = batches.iter().map(|b| b.duration_ms).collect();
    let sizes: Vec<f64> = batches.iter().map(|b| b.input_rows as f64).collect();
    Some(Figures {
        batches: batches.len(),
        rows,
        wall_secs,
        rows_per_second: rows as f64 / wall_secs,
        batch_rows_p50: percentile(&sizes, 50.0),
        batch_ms_p50: percentile(&durations, 50.0),
        batch_ms_p99: percentile(&durations, 99.0),
    })
}

/// Nearest-rank percentile, as the Spark script computes it.
fn percentile(values: &[f64], pct: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((pct / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Per-row latency percentiles (ms) over the batches' rows: a batch's
/// rows are due evenly from its first row's due time to its last's, and
/// all become visible at its commit.
fn row_latency_ms(batches: &[Batch], pcts: &[f64]) -> Vec<f64> {
    // (lowest, highest latency, rows) of each batch, in microseconds.
    let spans: Vec<(f64, f64, f64)> = batches
        .iter()
        .filter_map(|b| {
            let r = b.rate?;
            (r.end > r.start).then(|| {
                (
                    (b.ended - r.due(r.end - 1)) as f64,
                    (b.ended - r.due(r.start)) as f64,
                    (r.end - r.start) as f64,
                )
            })
        })
        .collect();
    let total: f64 = spans.iter().map(|s| s.2).sum();
    let at_most = |x: f64| -> f64 {
        spans
            .iter()
            .map(|&(lo, hi, n)| {
                if x >= hi {
                    n
                } else if x < lo {
                    0.0
                } else {
                    n * (x - lo) / (hi - lo).max(1.0)
                }
            })
            .sum()
    };
    pcts.iter()
        .map(|pct| {
            let want = total * pct / 100.0;
            let mut lo = spans.iter().map(|s| s.0).fold(f64::INFINITY, f64::min);
            let mut hi = spans.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max);
            for _ in 0..60 {
                let mid = (lo + hi) / 2.0;
                if at_most(mid) >= want {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            hi / 1000.0
        })
        .collect()
}

/// Runs a query with `ember submit --format csv`; its one result row.
fn query_row(dir: &Path, script: &str) -> Result<Vec<String>, String> {
    let job = dir.join("check.sql");
    std::fs::write(&job, script).unwrap();
    let out = Command::new(ember())
        .args(["submit", "--master", "local[2]", "--format", "csv"])
        .arg(&job)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(last_lines(&String::from_utf8_lossy(&out.stderr), 3));
    }
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout
        .lines()
        .nth(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .ok_or_else(|| format!("no result row: {stdout}"))
}

fn number(cell: Option<&String>) -> i128 {
    cell.and_then(|c| c.trim().parse().ok()).unwrap_or(-1)
}

/// The rate rows every batch of `run` took: `0..end` of its last batch.
fn rows_taken(run: &EmberRun) -> u64 {
    run.batches.last().and_then(|b| b.rate).map_or(0, |r| r.end)
}

/// The stateless output holds exactly the rows `0..n` that pass the
/// filter, each with its double.
fn check_stateless(dir: &Path, out: &Path, run: &EmberRun) -> Option<String> {
    if let Some(error) = &run.error {
        return Some(format!("failed: {error}"));
    }
    let n = i128::from(rows_taken(run));
    let multiples = (n + 2) / 3;
    let expected_rows = n - multiples;
    let expected_sum = n * (n - 1) / 2 - 3 * multiples * (multiples - 1) / 2;
    let row = match query_row(
        dir,
        &format!(
            "CREATE EXTERNAL TABLE o STORED AS PARQUET LOCATION '{}/';\n\
             SELECT count(*) AS rows, sum(value) AS total, \
             sum(CASE WHEN value % 3 = 0 OR doubled <> value * 2 THEN 1 ELSE 0 END) AS bad \
             FROM o;\n",
            out.display()
        ),
    ) {
        Ok(row) => row,
        Err(e) => return Some(format!("reading the output failed: {e}")),
    };
    let (rows, total, bad) = (number(row.first()), number(row.get(1)), number(row.get(2)));
    (rows != expected_rows || total != expected_sum || bad != 0).then(|| {
        format!(
            "{rows} rows summing to {total} ({bad} bad), expected {expected_rows} \
             summing to {expected_sum}"
        )
    })
}

/// The window counts written and those still in the last state add up
/// to the rows taken (rate rows are never late).
fn check_window(dir: &Path, out: &Path, ckpt: &Path, run: &EmberRun) -> Option<String> {
    if let Some(error) = &run.error {
        return Some(format!("failed: {error}"));
    }
    let Some(last) = run.batches.last().map(|b| b.id) else {
        return Some("no batch ran".to_string());
    };
    let state = ckpt.join("state");
    let partitions = std::fs::read_to_string(state.join("partitions"))
        .ok()
        .and_then(|n| n.trim().parse().ok());
    let Some(partitions) = partitions else {
        return Some(format!("no state partition count in {}", state.display()));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let rows = match runtime.block_on(store::read_version(&state, last, partitions)) {
        Ok(rows) => rows,
        Err(e) => return Some(format!("no readable state in {}: {e}", state.display())),
    };
    let mut kept = 0i128;
    for batch in rows {
        let n = batch
            .column_by_name("n")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
            .expect("the state has the count column n");
        kept += n.iter().flatten().map(i128::from).sum::<i128>();
    }
    let written_rows: u64 = run.batches.iter().map(|b| b.output_rows).sum();
    let written = if written_rows == 0 {
        0
    } else {
        let row = match query_row(
            dir,
            &format!(
                "CREATE EXTERNAL TABLE o STORED AS PARQUET LOCATION '{}/';\n\
                 SELECT count(*) AS rows, sum(n) AS n, max(key) AS top FROM o;\n",
                out.display()
            ),
        ) {
            Ok(row) => row,
            Err(e) => return Some(format!("reading the output failed: {e}")),
        };
        if number(row.first()) != i128::from(written_rows) || number(row.get(2)) >= 100 {
            return Some(format!(
                "output {row:?}, expected {written_rows} rows with keys below 100"
            ));
        }
        number(row.get(1))
    };
    let taken = i128::from(rows_taken(run));
    (kept + written != taken).then(|| {
        format!("{written} counted in the output and {kept} in the state, {taken} rows taken")
    })
}

/// A venv with PySpark from PyPI, made once under the target dir.
fn spark_python() -> PathBuf {
    ember_testkit::python_venv(
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("spark-venv"),
        PYSPARK,
    )
}

/// One run of the Spark script: its JSON line, or why there is none.
fn spark(
    python: &Path,
    workload: &str,
    seconds: f64,
    rate: u64,
    dir: &Path,
) -> Result<Value, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/spark_streaming.py");
    let log = dir.join(format!("spark-{workload}.log"));
    eprintln!("Spark: {workload} at {rate} rows/s");
    let child = Command::new(python)
        .arg(&script)
        .arg(workload)
        .args(["--seconds", &seconds.to_string()])
        .args(["--rows-per-second", &rate.to_string()])
        .arg("--out")
        .arg(dir.join(format!("spark-{workload}")))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(dir.join(format!("spark-{workload}")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'));
    match (out.status.success(), line) {
        (true, Some(line)) => serde_json::from_str(line).map_err(|e| e.to_string()),
        _ => Err(format!(
            "failed ({}): {}",
            out.status,
            last_lines(&std::fs::read_to_string(&log).unwrap_or_default(), 3)
        )),
    }
}

/// The DDL and `START` of a rate-source query.
fn rate_script(
    rate: u64,
    query: &str,
    options: &str,
    stop_secs: f64,
    ckpt: &Path,
    out: &Path,
) -> String {
    format!(
        "CREATE UNBOUNDED EXTERNAL TABLE ticks STORED AS RATE LOCATION 'rate:' \
         OPTIONS ('rowsPerSecond' '{rate}');\n\
         START STREAMING QUERY q CHECKPOINT '{}' {options} STOP AFTER '{} ms' \
         INTO PARQUET '{}' AS {query};\n",
        ckpt.display(),
        (stop_secs * 1000.0).round() as u64,
        out.display()
    )
}

/// A rate-source run in a fresh directory under `root`.
fn rate_run(
    root: &Path,
    name: &str,
    rate: u64,
    query: &str,
    options: &str,
    stop_secs: f64,
) -> (PathBuf, EmberRun) {
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (ckpt, out) = (dir.join("ckpt"), dir.join("out"));
    eprintln!("Ember: {name} at {rate} rows/s for {stop_secs} s");
    let script = rate_script(rate, query, options, stop_secs, &ckpt, &out);
    // The last batch runs to its end after STOP AFTER.
    let limit = Duration::from_secs_f64(stop_secs * 4.0 + 60.0);
    let run = run_stream(&dir, &script, &ckpt, limit);
    (dir, run)
}

/// The fastest rows per second of processing that a batch of at least
/// 100k rows showed.
fn fastest(run: &EmberRun) -> Option<f64> {
    run.batches
        .iter()
        .filter(|b| b.input_rows >= 100_000 && b.duration_ms > 0.0)
        .map(|b| b.input_rows as f64 / (b.duration_ms / 1000.0))
        .reduce(f64::max)
}

/// A run's mean batch: rows, and seconds from the end of the batch before.
fn mean_batch(f: &Figures) -> (f64, f64) {
    let n = f.batches as f64;
    (f.rows as f64 / n, f.wall_secs / n)
}

/// The rate at which batches settle at `rows`: with the default trigger a
/// batch of `s` rows takes `fixed + s * per_row` seconds from the end of
/// the one before, the line through two runs' mean batches, and holds
/// the rows due in the batch before.
fn settling_rate(small: (f64, f64), large: (f64, f64), rows: f64) -> Option<f64> {
    let per_row = (large.1 - small.1) / (large.0 - small.0);
    if !(per_row.is_finite() && per_row > 0.0) {
        return None;
    }
    let fixed = (small.1 - per_row * small.0).max(0.0);
    Some(rows / (fixed + per_row * rows))
}

/// Waits until `lead` seconds before the next minute on the wall clock.
fn before_next_minute(lead: f64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let wait = (60.0 - lead - now % 60.0).rem_euclid(60.0);
    eprintln!("waiting {wait:.0} s, to start {lead} s before a minute ends");
    std::thread::sleep(Duration::from_secs_f64(wait));
}

/// A line of the summary table.
struct Line {
    what: String,
    ember: String,
    spark: String,
    ratio: String,
    target: String,
}

fn millions(rows_per_second: f64) -> String {
    format!("{:.2}M rows/s", rows_per_second / 1e6)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// Where a wrong answer is reported.
fn right(wrong: &Option<String>) -> String {
    match wrong {
        None => "output right".to_string(),
        Some(why) => format!("OUTPUT WRONG: {why}"),
    }
}

struct Bench {
    root: PathBuf,
    seconds: f64,
    warmup: f64,
    python: Option<PathBuf>,
    lines: Vec<Line>,
    notes: Vec<String>,
}

impl Bench {
    fn spark(&self, workload: &str, rate: u64) -> Option<Result<Value, String>> {
        let python = self.python.as_ref()?;
        Some(spark(python, workload, self.seconds, rate, &self.root))
    }

    fn spark_note(&mut self, workload: &str, spark: &Option<Result<Value, String>>) {
        match spark {
            Some(Ok(s)) => self.notes.push(format!(
                "{workload}, Spark {}: {} source, {} measured batches of {} rows in {:.1} s, \
                 batch p50 {} ms, p99 {} ms; first batch done {:.1} s after the start",
                s["spark_version"].as_str().unwrap_or("?"),
                s["source"].as_str().unwrap_or("?"),
                s["batches"],
                s["batch_rows"]
                    .as_u64()
                    .map_or("varying".to_string(), |r| r.to_string()),
                s["wall_seconds"].as_f64().unwrap_or(f64::NAN),
                s["batch_ms_p50"],
                s["batch_ms_p99"],
                s["startup_seconds"].as_f64().unwrap_or(f64::NAN),
            )),
            Some(Err(e)) => self.notes.push(format!("{workload}, Spark: {e}")),
            None => {}
        }
    }

    fn ember_note(&mut self, what: &str, rate: u64, run: &EmberRun, figures: &Option<Figures>) {
        let startup = run
            .startup_secs()
            .map_or("-".to_string(), |s| format!("{s:.2} s"));
        match figures {
            Some(f) => self.notes.push(format!(
                "{what}, Ember at {} rows/s: {} measured batches, {} rows in {:.1} s, \
                 batch rows p50 {:.0}, batch p50 {:.0} ms, p99 {:.0} ms; first batch done \
                 {startup} after the start, {} batches in {:.1} s in all",
                rate,
                f.batches,
                f.rows,
                f.wall_secs,
                f.batch_rows_p50,
                f.batch_ms_p50,
                f.batch_ms_p99,
                run.batches.len(),
                run.secs,
            )),
            None => self.notes.push(format!(
                "{what}, Ember at {rate} rows/s: no batch after the warm-up ({} batches, {}){}",
                run.batches.len(),
                startup,
                run.error
                    .as_ref()
                    .map_or(String::new(), |e| format!(": {e}"))
            )),
        }
    }

    /// stateless or window: probe, saturated run, run at Spark's batch size.
    fn throughput(&mut self, workload: &str, query: &str, options: &str) {
        let spark = self.spark(workload, 1_000_000);
        self.spark_note(workload, &spark);
        let spark_rate = match &spark {
            Some(Ok(s)) => s["rows_per_second"].as_f64(),
            _ => None,
        };

        let (probe_dir, probe) = rate_run(
            &self.root,
            &format!("{workload}-probe"),
            PROBE_RATE,
            query,
            options,
            2.0,
        );
        let _ = std::fs::remove_dir_all(probe_dir);
        let Some(fastest) = fastest(&probe) else {
            self.notes.push(format!(
                "{workload}, Ember probe: no batch to calibrate from ({} batches){}",
                probe.batches.len(),
                probe.error.map_or(String::new(), |e| format!(": {e}"))
            ));
            return;
        };
        self.notes.push(format!(
            "{workload}, Ember probe at {PROBE_RATE} rows/s: batches of {} rows, the fastest \
             {}",
            probe
                .batches
                .iter()
                .map(|b| b.input_rows.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            millions(fastest),
        ));
        let stop = self.warmup + self.seconds;
        let saturated = (fastest * OVERDRIVE) as u64;
        let saturated_figures =
            self.measured_run(workload, "saturated", saturated, query, options, stop);
        // A short run at half the fastest rate settles at small batches;
        // with the saturated run's large ones, it gives the rate whose
        // batches settle at Spark's size.
        let pilot_rate = (fastest / 2.0) as u64;
        let (pilot_dir, pilot) = rate_run(
            &self.root,
            &format!("{workload}-pilot"),
            pilot_rate,
            query,
            options,
            3.0,
        );
        let _ = std::fs::remove_dir_all(pilot_dir);
        let pilot_figures = figures(&pilot, 1.0);
        let matched = pilot_figures
            .as_ref()
            .zip(saturated_figures.as_ref())
            .and_then(|(p, s)| settling_rate(mean_batch(p), mean_batch(s), SPARK_BATCH_ROWS as f64))
            .unwrap_or(fastest / 2.0) as u64;
        if let Some(p) = &pilot_figures {
            self.notes.push(format!(
                "{workload}, Ember pilot at {pilot_rate} rows/s: batches of {:.0} rows every \
                 {:.1} ms; batches of {SPARK_BATCH_ROWS} rows expected at {}",
                mean_batch(p).0,
                mean_batch(p).1 * 1000.0,
                millions(matched as f64)
            ));
        }
        let matched_figures = self.measured_run(
            workload,
            "at Spark's batch size",
            matched,
            query,
            options,
            stop,
        );
        let runs = [
            ("saturated", saturated_figures),
            ("at Spark's batch size", matched_figures),
        ];
        for (what, f) in runs {
            let ember_rate = f.as_ref().map(|f| f.rows_per_second);
            let ratio = ember_rate.zip(spark_rate).map(|(e, s)| e / s);
            let matched = what.starts_with("at Spark");
            self.lines.push(Line {
                what: format!("{workload} {what}, throughput"),
                ember: ember_rate.map_or("-".to_string(), millions),
                spark: spark_rate.map_or("-".to_string(), millions),
                ratio: ratio.map_or("-".to_string(), |r| format!("{r:.2}x")),
                target: if matched {
                    format!(
                        ">= {THROUGHPUT_TARGET}x: {}",
                        ratio.map_or("-", |r| verdict(r >= THROUGHPUT_TARGET))
                    )
                } else {
                    String::new()
                },
            });
        }
    }

    /// A rate-source run of `stop` seconds, its output checked; its
    /// figures after the warm-up.
    fn measured_run(
        &mut self,
        workload: &str,
        what: &str,
        rate: u64,
        query: &str,
        options: &str,
        stop: f64,
    ) -> Option<Figures> {
        let name = format!("{workload}-{}", what.split_whitespace().next().unwrap());
        // The compared window run starts 8 s before a minute ends, so the
        // window it starts in is final (its end 10 s behind the newest
        // row) and written 18 s in.
        let aligned = workload == "window" && what.starts_with("at Spark") && stop >= 20.0;
        if aligned {
            before_next_minute(8.0);
        }
        let (dir, run) = rate_run(&self.root, &name, rate, query, options, stop);
        let written: u64 = run.batches.iter().map(|b| b.output_rows).sum();
        let wrong = if aligned && written == 0 && run.error.is_none() {
            Some("no window written, though one closed more than 10 s before the end".to_string())
        } else if workload == "window" {
            check_window(&dir, &dir.join("out"), &dir.join("ckpt"), &run)
        } else {
            check_stateless(&dir, &dir.join("out"), &run)
        };
        let _ = std::fs::remove_dir_all(dir);
        let f = figures(&run, self.warmup);
        self.ember_note(&format!("{workload} {what}"), rate, &run, &f);
        if workload == "window" {
            self.notes.push(format!(
                "{workload} {what}: {written} window rows written, {} groups in the state at \
                 the end",
                run.last_state().unwrap_or_default()
            ));
        }
        self.notes
            .push(format!("{workload} {what}: {}", right(&wrong)));
        f
    }

    fn latency(&mut self) {
        let rate: u64 = env_or("EMBER_BENCH_RATE", 1_000_000u64);
        let spark = self.spark("latency", rate);
        self.spark_note("latency", &spark);
        let (dir, run) = rate_run(
            &self.root,
            "latency",
            rate,
            STATELESS,
            "",
            self.warmup + self.seconds,
        );
        let wrong = check_stateless(&dir, &dir.join("out"), &run);
        let _ = std::fs::remove_dir_all(&dir);
        let f = figures(&run, self.warmup);
        self.ember_note("latency", rate, &run, &f);
        self.notes.push(format!("latency: {}", right(&wrong)));
        let (_, batches) = measured(&run.batches, self.warmup);
        let rows = row_latency_ms(batches, &[50.0, 99.0]);
        let spark_ms = |field: &str| match &spark {
            Some(Ok(s)) => s[field].as_f64(),
            _ => None,
        };
        let (sp50, sp99) = (spark_ms("batch_ms_p50"), spark_ms("batch_ms_p99"));
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} ms"));
        let ratio = |e: Option<f64>, s: Option<f64>| {
            e.zip(s)
                .map_or("-".to_string(), |(e, s)| format!("{:.2}x", e / s))
        };
        let have = !batches.is_empty();
        let (p50, p99) = (have.then(|| rows[0]), have.then(|| rows[1]));
        for (name, ember, spark, target) in [
            ("p50", p50, sp50, LATENCY_P50_TARGET_MS),
            ("p99", p99, sp99, LATENCY_P99_TARGET_MS),
        ] {
            self.lines.push(Line {
                what: format!("latency at {}M rows/s, per row {name}", rate as f64 / 1e6),
                ember: ms(ember),
                spark: format!("{} (batch)", ms(spark)),
                ratio: ratio(ember, spark),
                target: format!(
                    "<= {target} ms: {}",
                    ember.map_or("-", |v| verdict(v <= target))
                ),
            });
        }
        self.lines.push(Line {
            what: "latency, batch duration p50 / p99".to_string(),
            ember: f.as_ref().map_or("-".to_string(), |f| {
                format!("{:.0} / {:.0} ms", f.batch_ms_p50, f.batch_ms_p99)
            }),
            spark: format!("{} / {}", ms(sp50), ms(sp99)),
            ratio: ratio(f.as_ref().map(|f| f.batch_ms_p50), sp50),
            target: String::new(),
        });
    }

    fn kafka(&mut self) {
        let records: u64 = env_or("EMBER_BENCH_KAFKA_RECORDS", 500_000u64);
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let broker =
            ember_testkit::kafka::Broker::start(tmp, ember_testkit::kafka::Build::Benchmarks);
        broker.create_topic("news", 2);
        let python = ember_testkit::kafka::python(tmp);
        let producer = r#"
import json, sys, time
from kafka import KafkaProducer
address, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
sections = ["world", "business", "sport", "culture", "science"]
producer = KafkaProducer(bootstrap_servers=address, acks=1, linger_ms=20, batch_size=1 << 20)
size = 0
for i in range(n):
    value = json.dumps({"id": i, "title": f"story {i} about the state of things in the world",
                        "section": sections[i % 5]}).encode()
    size += len(value)
    producer.send(topic, value=value)
producer.flush(timeout=120)
producer.close(timeout=120)
print(size)
"#;
        eprintln!(
            "producing {records} records to the broker at {} ...",
            broker.address()
        );
        let started = Instant::now();
        let out = Command::new(&python)
            .args([
                "-c",
                producer,
                &broker.address(),
                "news",
                &records.to_string(),
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let produced_secs = started.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "producing failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        self.notes.push(format!(
            "kafka: {records} records, {:.1} MB of JSON values, produced with kafka-python \
             in {produced_secs:.1} s",
            bytes as f64 / 1e6
        ));

        let dir = self.root.join("kafka");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (ckpt, out) = (dir.join("ckpt"), dir.join("out"));
        let script = format!(
            "CREATE UNBOUNDED EXTERNAL TABLE news (id BIGINT, title VARCHAR, section VARCHAR) \
             STORED AS KAFKA LOCATION '{}' OPTIONS ('subscribe' 'news', \
             'startingOffsets' 'earliest', 'valueFormat' 'json');\n\
             START STREAMING QUERY k TRIGGER AVAILABLE NOW CHECKPOINT '{}' INTO PARQUET '{}' \
             AS SELECT id, upper(title) AS title, section FROM news;\n",
            broker.address(),
            ckpt.display(),
            out.display()
        );
        eprintln!("Ember: kafka, {records} records");
        let run = run_stream(&dir, &script, &ckpt, Duration::from_secs(600));
        let rows: u64 = run.batches.iter().map(|b| b.input_rows).sum();
        let batch_secs: f64 = run.batches.iter().map(|b| b.duration_ms).sum::<f64>() / 1000.0;
        let wrong = if let Some(e) = &run.error {
            Some(format!("failed: {e}"))
        } else {
            match query_row(
                &dir,
                &format!(
                    "CREATE EXTERNAL TABLE o STORED AS PARQUET LOCATION '{}/';\n\
                     SELECT count(*) AS rows, count(DISTINCT id) AS ids, min(id) AS low, \
                     max(id) AS high, sum(CASE WHEN title = upper(title) THEN 0 ELSE 1 END) \
                     AS bad FROM o;\n",
                    out.display()
                ),
            ) {
                Err(e) => Some(format!("reading the output failed: {e}")),
                Ok(row) => {
                    let n = i128::from(records);
                    let got: Vec<i128> = (0..5).map(|i| number(row.get(i))).collect();
                    (got != [n, n, 0, n - 1, 0])
                        .then(|| format!("rows, ids, lowest, highest, bad: {got:?}"))
                }
            }
        };
        let _ = std::fs::remove_dir_all(&dir);
        drop(broker);
        self.notes.push(format!(
            "kafka, Ember: {} batches, {rows} rows in {batch_secs:.2} s of batch time, the \
             process {:.2} s from start to exit; {}",
            run.batches.len(),
            run.secs,
            right(&wrong)
        ));
        let per_sec = |x: f64| {
            if batch_secs > 0.0 {
                x / batch_secs
            } else {
                0.0
            }
        };
        self.lines.push(Line {
            what: "kafka JSON -> Parquet, rows".to_string(),
            ember: millions(per_sec(rows as f64)),
            spark: "n/a".to_string(),
            ratio: "-".to_string(),
            target: String::new(),
        });
        self.lines.push(Line {
            what: "kafka JSON -> Parquet, values parsed".to_string(),
            ember: format!("{:.1} MB/s", per_sec(bytes as f64) / 1e6),
            spark: "n/a".to_string(),
            ratio: "-".to_string(),
            target: String::new(),
        });
    }

    fn print(&self) {
        println!(
            "\nStreaming, Ember local[2] against Spark Structured Streaming local[2], 2 cores, \
             {} s measured",
            self.seconds
        );
        let width = self.lines.iter().map(|l| l.what.len()).max().unwrap_or(0);
        println!(
            "{:<width$}  {:>16}  {:>22}  {:>11}  target",
            "workload", "Ember", "Spark", "Ember/Spark"
        );
        for l in &self.lines {
            println!(
                "{:<width$}  {:>16}  {:>22}  {:>11}  {}",
                l.what, l.ember, l.spark, l.ratio, l.target
            );
        }
        println!();
        for note in &self.notes {
            println!("- {note}");
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let part = std::env::var("EMBER_BENCH_PART").unwrap_or_default();
    let wants = |name: &str| part.is_empty() || part == name;
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(tmp).unwrap();
    let scratch = tempfile::tempdir_in(tmp).unwrap();
    let spark_on = std::env::var("EMBER_BENCH_SPARK").ok().as_deref() != Some("0");
    let mut bench = Bench {
        root: scratch.path().to_path_buf(),
        seconds: env_or("EMBER_BENCH_SECONDS", 20.0),
        warmup: env_or("EMBER_BENCH_WARMUP", 2.0),
        python: (spark_on && !part.eq("kafka")).then(spark_python),
        lines: Vec::new(),
        notes: Vec::new(),
    };
    let started = Instant::now();
    if wants("stateless") {
        bench.throughput("stateless", STATELESS, "");
    }
    if wants("window") {
        bench.throughput(
            "window",
            WINDOW,
            "WATERMARK timestamp DELAY '10 seconds' OUTPUT MODE APPEND",
        );
    }
    if wants("latency") {
        bench.latency();
    }
    if wants("kafka") {
        bench.kafka();
    }
    bench.print();
    println!(
        "(the whole run took {:.0} s)",
        started.elapsed().as_secs_f64()
    );
}
