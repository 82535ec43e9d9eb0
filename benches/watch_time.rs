//! The watch-time benchmark: 10M generated view events (8 CSV files), the
//! per-video aggregation run three ways in one process, interleaved:
//!
//! - `ember submit --master local[2]`, whole process from start to exit;
//! - the same SQL on plain DataFusion in this process, 2 target partitions
//!   (the floor Ember's runtime adds to);
//! - `ember submit --master local[2]` on a 1-row table (a job's fixed cost).
//!
//! `cargo bench --bench watch_time`; `EMBER_BENCH_ROWS` and `EMBER_BENCH_RUNS`
//! change the size and the number of runs, `EMBER_BENCH_BINARY` runs another
//! `ember` (a build of an earlier commit) against the same baseline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ember_testkit::env_or;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use datafusion::prelude::{SessionConfig, SessionContext};
use ember::datagen::{cached_views, one_row_views, views_ddl};

const QUERY: &str = "SELECT video_id, SUM(watch_seconds)/60.0 AS minutes, COUNT(*) AS views \
                     FROM views GROUP BY video_id ORDER BY minutes DESC LIMIT 10";

/// Runs `ember submit` to completion; returns its wall time.
fn ember_submit(job: &Path) -> Duration {
    let started = Instant::now();
    let status = Command::new(ember_testkit::bench_binary(env!("CARGO_BIN_EXE_ember")))
        .args(["submit", "--master", "local[2]", "--format", "csv"])
        .arg(job)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .unwrap();
    let elapsed = started.elapsed();
    assert!(status.success(), "ember submit failed: {status}");
    elapsed
}

/// The largest peak RSS (MiB) of any child process finished so far.
fn children_peak_rss_mib() -> f64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is valid for the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0);
    usage.ru_maxrss as f64 / 1024.0
}

async fn datafusion_query(dir: &Path) -> Duration {
    let started = Instant::now();
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    ctx.sql(&views_ddl(dir)).await.unwrap();
    let rows = ctx.sql(QUERY).await.unwrap().collect().await.unwrap();
    assert!(rows.iter().map(|b| b.num_rows()).sum::<usize>() > 0);
    started.elapsed()
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn row(label: &str, xs: &[f64], unit: &str) {
    let mut sorted = xs.to_vec();
    let med = median(&mut sorted);
    println!(
        "{label:<44} median {med:>9.3} {unit}   min {:>9.3}   max {:>9.3}",
        sorted[0],
        sorted[sorted.len() - 1]
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rows = env_or("EMBER_BENCH_ROWS", 10_000_000);
    let runs = env_or("EMBER_BENCH_RUNS", 5).max(1) as usize;
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-data");
    let big = cached_views(&root, rows, 8).unwrap();
    let tiny = one_row_views(&root).unwrap();
    let job = |name: &str, dir: &Path| {
        let path = root.join(name);
        std::fs::write(&path, format!("{};\n{QUERY};\n", views_ddl(dir))).unwrap();
        path
    };
    let big_job = job("watch_time_big.sql", &big);
    let tiny_job = job("watch_time_tiny.sql", &tiny);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Warm-up: page cache and first-run costs out of the figures.
    ember_submit(&big_job);
    runtime.block_on(datafusion_query(&big));
    ember_submit(&tiny_job);

    let (mut ember_s, mut df_s, mut tiny_ms, mut ratios) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        let e = ember_submit(&big_job);
        let d = runtime.block_on(datafusion_query(&big));
        let t = ember_submit(&tiny_job);
        eprintln!(
            "run {}/{runs}: ember {:.3} s, datafusion {:.3} s, 1-row job {:.1} ms",
            run + 1,
            e.as_secs_f64(),
            d.as_secs_f64(),
            t.as_secs_f64() * 1e3
        );
        ember_s.push(e.as_secs_f64());
        df_s.push(d.as_secs_f64());
        tiny_ms.push(t.as_secs_f64() * 1e3);
        ratios.push(e.as_secs_f64() / d.as_secs_f64());
    }

    println!(
        "\nwatch-time benchmark: {rows} rows in 8 CSV files, {runs} runs, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    row(
        "ember submit --master local[2] (end to end)",
        &ember_s,
        "s ",
    );
    row("plain DataFusion, 2 partitions (in-process)", &df_s, "s ");
    row("ember submit, 1-row table (end to end)", &tiny_ms, "ms");
    row("ratio ember / DataFusion (per run)", &ratios, "x ");
    // The 10M-row runs are the largest children, so this is their peak.
    println!(
        "{:<44} {:>16.1} MiB",
        "peak RSS of the ember process (big input)",
        children_peak_rss_mib()
    );
    let ratio = median(&mut ratios);
    let tiny = median(&mut tiny_ms);
    println!(
        "\ntargets: ember/DataFusion <= 1.25x: {ratio:.2}x ({}); 1-row job <= 150 ms: {tiny:.1} ms ({})",
        if ratio <= 1.25 { "met" } else { "missed" },
        if tiny <= 150.0 { "met" } else { "missed" }
    );
}
