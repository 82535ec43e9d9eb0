//! The TPC-H benchmark: the 22 queries at scale factor 1 (Parquet, 4 files
//! a table, generated once under the target dir), each timed end to end
//! three ways, interleaved, in one run:
//!
//! - plain DataFusion in this process, 2 target partitions: a new context,
//!   the tables' DDL, the query, every row collected (the baseline);
//! - `ember submit --master local[2]`, the release binary, process start
//!   to exit, rows printed as CSV to a pipe;
//! - `ember submit` in client mode on a loopback cluster of a manager and
//!   two one-core workers (`--total-executor-cores 2`), start to exit; the
//!   bench waits for every core to be free before each submission.
//!
//! The baseline runs on mimalloc with the settings `ember` uses.
//!
//! Every Ember answer is checked against DataFusion's (as multisets, floats
//! within 1e-6). The report has one line per query (medians, ratios to
//! DataFusion, right or wrong) and the totals, over the queries each mode
//! got right, against the targets: local[2] at most 1.15x DataFusion in
//! sum and no query above 2x; client mode at most 1.5x in sum.
//!
//! `cargo bench --bench tpch`; `EMBER_BENCH_BINARY` runs another `ember`
//! (a build of an earlier commit, for before and after against the same
//! baseline); `EMBER_BENCH_SCALE` sets the scale factor
//! (default 1), `EMBER_BENCH_RUNS` the runs of each query in each way
//! (default 3, the median is reported), `EMBER_BENCH_QUERIES` which queries
//! (a comma-separated list of numbers; default all 22).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ember_testkit::env_or;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ember::tpch::{self, Answer, QUERIES};
use ember_testkit::LoopbackCluster;

// The baseline runs on the allocator the `ember` binary uses, so the ratios
// compare engines, not allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn ember() -> &'static Path {
    ember_testkit::bench_binary(env!("CARGO_BIN_EXE_ember"))
}

struct Cluster(LoopbackCluster);

impl Deref for Cluster {
    type Target = LoopbackCluster;
    fn deref(&self) -> &LoopbackCluster {
        &self.0
    }
}

impl Cluster {
    /// Waits until every core is free, so each submission starts on an
    /// idle cluster.
    fn wait_idle(&self) {
        self.wait_for("every core to be free", Duration::from_secs(30), |s| {
            s["workers"]
                .as_array()
                .is_some_and(|w| w.iter().all(|w| w["cores_used"] == 0))
        });
    }
}

/// What one Ember run printed, how long it took, and whether it succeeded.
struct Run {
    took: Duration,
    stdout: String,
    error: Option<String>,
}

fn timed(mut command: Command) -> Run {
    let started = Instant::now();
    let out = command.stdin(Stdio::null()).output().unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    Run {
        took,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        error: (!out.status.success()).then(|| error_message(&stderr)),
    }
}

/// What a failed `ember submit` said, from its `error:` line on, on one
/// line.
fn error_message(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().map(str::trim).collect();
    let from = lines
        .iter()
        .rposition(|l| l.starts_with("error:"))
        .unwrap_or(lines.len().saturating_sub(1));
    lines[from..].join(" ")
}

/// How one mode did on one query: every run's time and the first wrong
/// answer or failure.
#[derive(Default)]
struct Timings {
    secs: Vec<f64>,
    wrong: Option<String>,
}

impl Timings {
    fn add(&mut self, run: Run, expected: &Answer) {
        self.secs.push(run.took.as_secs_f64());
        if self.wrong.is_some() {
            return;
        }
        self.wrong = match run.error {
            Some(error) => Some(format!("failed: {error}")),
            None => match expected.read_csv(&run.stdout) {
                Err(e) => Some(format!("unreadable rows: {e}")),
                Ok(actual) => expected.difference(&actual),
            },
        };
    }

    fn median(&self) -> f64 {
        median(&self.secs)
    }

    fn verdict(&self) -> &'static str {
        if self.wrong.is_some() {
            "WRONG"
        } else {
            "right"
        }
    }
}

fn median(xs: &[f64]) -> f64 {
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn script(dir: &Path, n: u32) -> PathBuf {
    dir.join("queries").join(format!("q{n:02}.sql"))
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // The allocator settings `ember` runs with, for the baseline too.
    ember::allocator::configure();
    let scale: f64 = env_or("EMBER_BENCH_SCALE", 1.0);
    let runs: usize = env_or("EMBER_BENCH_RUNS", 3usize).max(1);
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-data");
    let dir = tpch::cached_tpch(&root, scale, 4).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let datafusion = |n: u32| {
        let started = Instant::now();
        let answer = runtime
            .block_on(tpch::datafusion_answer(&dir, n, scale, 2))
            .unwrap_or_else(|e| panic!("Q{n} on DataFusion: {e}"));
        (started.elapsed().as_secs_f64(), answer)
    };
    let cluster = Cluster(LoopbackCluster::start(ember(), 2, &[]));
    let local = |n: u32| {
        let mut command = Command::new(ember());
        command
            .args(["submit", "--master", "local[2]", "--format", "csv"])
            .arg(script(&dir, n));
        timed(command)
    };
    let client = |n: u32| {
        cluster.wait_idle();
        let name = format!("tpch-q{n:02}");
        let mut command = cluster.ember(&[
            "submit",
            "--total-executor-cores",
            "2",
            "--format",
            "csv",
            "--name",
            &name,
        ]);
        command.arg(script(&dir, n));
        timed(command)
    };

    // EMBER_BENCH_QUERIES=5,9,21 times just those.
    let only: Vec<u32> = std::env::var("EMBER_BENCH_QUERIES")
        .map(|v| v.split(',').filter_map(|q| q.trim().parse().ok()).collect())
        .unwrap_or_default();
    let mut results = Vec::new();
    for n in QUERIES.filter(|n| only.is_empty() || only.contains(n)) {
        // The first DataFusion run is the warm-up (page cache) and the
        // reference answer; the timed runs follow, interleaved.
        let (_, expected) = datafusion(n);
        let mut result = QueryResult {
            n,
            datafusion: Vec::new(),
            local: Timings::default(),
            client: Timings::default(),
        };
        for _ in 0..runs {
            result.datafusion.push(datafusion(n).0);
            result.local.add(local(n), &expected);
            result.client.add(client(n), &expected);
        }
        eprintln!(
            "Q{n:02}: DataFusion {:.3} s, local[2] {:.3} s ({}), client {:.3} s ({}), {} rows",
            median(&result.datafusion),
            result.local.median(),
            result.local.verdict(),
            result.client.median(),
            result.client.verdict(),
            expected.rows.len()
        );
        results.push(result);
    }
    report(&results, scale, runs);
}

/// One query's times in each way.
struct QueryResult {
    n: u32,
    datafusion: Vec<f64>,
    local: Timings,
    client: Timings,
}

impl QueryResult {
    fn baseline(&self) -> f64 {
        median(&self.datafusion)
    }
}

/// Over the queries `mode` got right: how many, DataFusion's total and
/// Ember's.
fn totals(results: &[QueryResult], mode: fn(&QueryResult) -> &Timings) -> (usize, f64, f64) {
    let right: Vec<&QueryResult> = results.iter().filter(|r| mode(r).wrong.is_none()).collect();
    let datafusion = right.iter().map(|r| r.baseline()).sum();
    let ember = right.iter().map(|r| mode(r).median()).sum();
    (right.len(), datafusion, ember)
}

fn report(results: &[QueryResult], scale: f64, runs: usize) {
    println!(
        "\nTPC-H scale factor {scale}, 4 Parquet files a table, median of {runs} runs, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "{:<5} {:>10} {:>10} {:>7} {:>10} {:>7}  answers (local[2], client)",
        "query", "DataFusion", "local[2]", "ratio", "client", "ratio"
    );
    for r in results {
        let df = r.baseline();
        println!(
            "Q{:02}   {df:>9.3}s {:>9.3}s {:>6.2}x {:>9.3}s {:>6.2}x  {}, {}",
            r.n,
            r.local.median(),
            r.local.median() / df,
            r.client.median(),
            r.client.median() / df,
            r.local.verdict(),
            r.client.verdict()
        );
    }
    let (local_right, local_df, local_sum) = totals(results, |r| &r.local);
    let (client_right, client_df, client_sum) = totals(results, |r| &r.client);
    let local_ratio = local_sum / local_df;
    let client_ratio = client_sum / client_df;
    let all = results.len();
    println!(
        "\nlocal[2]: {local_right}/{all} right; over those, {local_sum:.3} s vs DataFusion {local_df:.3} s = {local_ratio:.2}x"
    );
    println!(
        "client:   {client_right}/{all} right; over those, {client_sum:.3} s vs DataFusion {client_df:.3} s = {client_ratio:.2}x"
    );
    let worst = results
        .iter()
        .filter(|r| r.local.wrong.is_none())
        .map(|r| (r.n, r.local.median() / r.baseline()))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let met = |ok: bool| if ok { "met" } else { "missed" };
    println!("\ntargets:");
    println!(
        "  every answer right in both modes: {} ({} wrong)",
        met(local_right == all && client_right == all),
        2 * all - local_right - client_right
    );
    println!(
        "  local[2] sum <= 1.15x DataFusion: {local_ratio:.2}x ({})",
        met(local_ratio <= 1.15)
    );
    println!(
        "  client sum <= 1.5x DataFusion: {client_ratio:.2}x ({})",
        met(client_ratio <= 1.5)
    );
    if let Some((n, ratio)) = worst {
        println!(
            "  no local[2] query above 2x DataFusion: worst Q{n:02} at {ratio:.2}x ({})",
            met(ratio <= 2.0)
        );
    }
    let wrong: Vec<String> = results
        .iter()
        .flat_map(|r| {
            [("local[2]", &r.local), ("client", &r.client)]
                .into_iter()
                .filter_map(move |(mode, t)| {
                    t.wrong
                        .as_ref()
                        .map(|why| format!("Q{:02} {mode}: {why}", r.n))
                })
        })
        .collect();
    if !wrong.is_empty() {
        println!("\nwrong answers:\n{}", wrong.join("\n"));
    }
}
