//! Data bigger than memory, measured in one run on this machine:
//!
//! - TPC-H at scale factor 10 (Parquet, 4 files a table, generated once
//!   under the target dir), each query run three ways, one after the other:
//!   `ember submit --master local[2] --driver-memory 4g`; plain DataFusion
//!   with 2 target partitions and a 4 GB fair spill pool, in a child
//!   process; DuckDB (from PyPI, in a venv under the target dir) with 2
//!   threads and `memory_limit = '4GB'`. Each one's time and peak RSS;
//!   Ember's and DuckDB's answers checked against DataFusion's (numbers
//!   within a tolerance, since DuckDB types averages as doubles).
//! - Sorting 100M generated view rows (`ember gen views`) into Parquet with
//!   2 GB of memory: Ember `local[2] --driver-memory 2g` against DataFusion
//!   with a 2 GB fair spill pool and 2 partitions: time, peak RSS, bytes
//!   spilled.
//!
//! Times are whole processes, start to exit, except DuckDB's: its Python
//! interpreter's start is left out (the script times its own queries).
//! Peak RSS is each process's VmHWM.
//!
//! `cargo bench --bench memory`; `EMBER_BENCH_PART` is `tpch` or `sort`
//! (default both), `EMBER_BENCH_SCALE` the scale factor (10),
//! `EMBER_BENCH_QUERIES` which queries (default all 22),
//! `EMBER_BENCH_SORT_ROWS` the rows to sort (100M), `EMBER_BENCH_BINARY`
//! another `ember` to run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::{collect, execute_stream};
use datafusion::prelude::{SessionConfig, SessionContext};
use ember::tpch::{self, Answer, Cell, QUERIES};
use ember_testkit::{env_or, run_measured};
use futures::StreamExt;

// The baseline runs on the allocator the `ember` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const GB: u64 = 1 << 30;

fn ember() -> &'static Path {
    ember_testkit::bench_binary(env!("CARGO_BIN_EXE_ember"))
}

fn data_root() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-data")
}

/// One process's run: seconds, peak RSS, and what it printed.
struct Run {
    secs: f64,
    rss: u64,
    stdout: String,
    stderr: String,
    ok: bool,
}

fn run(command: &mut Command) -> Run {
    let started = Instant::now();
    let measured = run_measured(command).unwrap();
    Run {
        secs: started.elapsed().as_secs_f64(),
        rss: measured.peak_rss,
        stdout: String::from_utf8_lossy(&measured.output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&measured.output.stderr).into_owned(),
        ok: measured.output.status.success(),
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / GB as f64)
}

/// This bench binary again, as a child that runs `what` on DataFusion.
fn child(what: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.arg("--bench").env("EMBER_BENCH_CHILD", what);
    command
}

/// A DataFusion session with `partitions` target partitions and a fair
/// spill pool of `memory` bytes.
fn limited_datafusion(partitions: usize, memory: usize) -> SessionContext {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(memory)))
        .build_arc()
        .unwrap();
    SessionContext::new_with_config_rt(
        SessionConfig::new().with_target_partitions(partitions),
        runtime,
    )
}

/// Runs `script`'s statements; returns the last query's rows (written to
/// `out` as Arrow IPC when given) and the bytes every plan spilled.
async fn run_script(ctx: &SessionContext, script: &str, out: Option<&Path>) -> u64 {
    let mut spilled = 0;
    for statement in ember_engine::script::split_statements(script) {
        let frame = ctx.sql(&statement.text).await.unwrap();
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let plan = frame.create_physical_plan().await.unwrap();
        let is_query = statement
            .text
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("select");
        if is_query && let Some(out) = out {
            let batches = collect(Arc::clone(&plan), ctx.task_ctx()).await.unwrap();
            let file = std::fs::File::create(out).unwrap();
            let mut writer = FileWriter::try_new(file, &schema).unwrap();
            for batch in &batches {
                writer.write(batch).unwrap();
            }
            writer.finish().unwrap();
        } else {
            let mut stream = execute_stream(Arc::clone(&plan), ctx.task_ctx()).unwrap();
            while let Some(batch) = stream.next().await {
                batch.unwrap();
            }
        }
        spilled += ember_engine::memory::spilled_bytes(&plan);
    }
    spilled
}

/// The child's side: `EMBER_BENCH_CHILD` says what to run.
fn run_child(what: &str) {
    let var = |name: &str| std::env::var(name).unwrap();
    let memory: usize = var("EMBER_CHILD_MEMORY").parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ctx = limited_datafusion(2, memory);
    let script = var("EMBER_CHILD_SCRIPT");
    let out = std::env::var("EMBER_CHILD_OUT").ok().map(PathBuf::from);
    let spilled = runtime.block_on(run_script(&ctx, &script, out.as_deref()));
    println!("{what} spilled_bytes={spilled}");
}

/// An answer's numbers as floats, so DuckDB's doubles and DataFusion's
/// decimals compare within a tolerance.
fn loose(rows: &[Vec<Cell>]) -> Vec<Vec<Cell>> {
    let mut rows: Vec<Vec<Cell>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|c| match c {
                    Cell::Text(t) => t.parse::<f64>().map_or(c.clone(), Cell::Float),
                    _ => c.clone(),
                })
                .collect()
        })
        .collect();
    let key = |r: &Vec<Cell>| r.iter().map(ToString::to_string).collect::<Vec<_>>();
    rows.sort_by(|a, b| {
        a.iter()
            .zip(b)
            .map(|(x, y)| match (x, y) {
                (Cell::Float(x), Cell::Float(y)) => x.total_cmp(y),
                _ => x.to_string().cmp(&y.to_string()),
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| key(a).cmp(&key(b)))
    });
    rows
}

fn same_loosely(expected: &Answer, actual: &Answer) -> Option<String> {
    let (a, b) = (loose(&expected.rows), loose(&actual.rows));
    if a.len() != b.len() {
        return Some(format!("{} rows expected, {} returned", a.len(), b.len()));
    }
    for (x, y) in a.iter().zip(&b) {
        let same = x.len() == y.len()
            && x.iter().zip(y).all(|(p, q)| match (p, q) {
                (Cell::Float(p), Cell::Float(q)) => {
                    (p - q).abs() <= 1e-4 + 1e-6 * p.abs().max(q.abs())
                }
                _ => p == q,
            });
        if !same {
            let show = |r: &Vec<Cell>| r.iter().map(ToString::to_string).collect::<Vec<_>>();
            return Some(format!("expected {:?}, returned {:?}", show(x), show(y)));
        }
    }
    None
}

const DUCKDB: &str = r#"
import csv, os, sys, time
import duckdb
con = duckdb.connect()
con.execute("SET threads = 2")
con.execute("SET memory_limit = '4GB'")
con.execute("SET preserve_insertion_order = false")
con.execute("SET enable_progress_bar = false")
started = time.time()
for table in os.environ["EMBER_TABLES"].split(","):
    con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{os.environ['EMBER_DIR']}/{table}/*.parquet')")
rows, header = None, None
for statement in os.environ["EMBER_SQL"].split(";"):
    if not statement.strip():
        continue
    cursor = con.execute(statement)
    if statement.strip().lower().startswith("select"):
        header = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
took = time.time() - started
out = csv.writer(sys.stdout)
out.writerow(header)
for row in rows:
    out.writerow(["NULL" if v is None else v for v in row])
print(f"took={took}", file=sys.stderr)
"#;

/// A venv with DuckDB from PyPI, made once under the target dir.
fn duckdb_python() -> PathBuf {
    ember_testkit::python_venv(
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-venv"),
        "duckdb",
    )
}

fn tpch_part() {
    let scale: f64 = env_or("EMBER_BENCH_SCALE", 10.0);
    let dir = tpch::cached_tpch(&data_root(), scale, 4).unwrap();
    let python = duckdb_python();
    let only: Vec<u32> = std::env::var("EMBER_BENCH_QUERIES")
        .map(|v| v.split(',').filter_map(|q| q.trim().parse().ok()).collect())
        .unwrap_or_default();
    let scratch = tempfile::tempdir().unwrap();
    let tables: Vec<&str> = tpch::Table::ALL.iter().map(|t| t.name()).collect();
    println!("TPC-H SF{scale}, 4 GB of memory, 2 cores: seconds and peak RSS per query");
    println!(
        "{:<4} {:>22} {:>30} {:>30}",
        "", "DataFusion", "Ember local[2]", "DuckDB"
    );
    let mut totals = [0.0f64; 3];
    let mut rss_max = [0u64; 3];
    let mut right = [0usize; 2];
    let mut counted = 0;
    for n in QUERIES.filter(|n| only.is_empty() || only.contains(n)) {
        let script = format!(
            "{}{}",
            tpch::tables_ddl(&dir),
            tpch::query(n, scale).unwrap()
        );
        let out = scratch.path().join(format!("q{n}.arrow"));
        let df = run(child("tpch")
            .env("EMBER_CHILD_MEMORY", (4 * GB).to_string())
            .env("EMBER_CHILD_SCRIPT", &script)
            .env("EMBER_CHILD_OUT", &out));
        assert!(df.ok, "Q{n} on DataFusion failed: {}", df.stderr);
        let reader = FileReader::try_new(std::fs::File::open(&out).unwrap(), None).unwrap();
        let schema = reader.schema();
        let batches: Vec<_> = reader.map(Result::unwrap).collect();
        let expected = Answer::from_batches(&schema, &batches).unwrap();

        let ember_run = run(Command::new(ember())
            .args([
                "submit",
                "--master",
                "local[2]",
                "--driver-memory",
                "4g",
                "--format",
                "csv",
            ])
            .arg(dir.join("queries").join(format!("q{n:02}.sql"))));
        let ember_wrong = if ember_run.ok {
            match expected.read_csv(&ember_run.stdout) {
                Ok(actual) => expected.difference(&actual),
                Err(e) => Some(format!("unreadable: {e}")),
            }
        } else {
            Some(format!("failed: {}", ember_run.stderr.trim()))
        };

        let mut duck_run = run(Command::new(&python)
            .args(["-c", DUCKDB])
            .env("EMBER_DIR", &dir)
            .env("EMBER_TABLES", tables.join(","))
            .env("EMBER_SQL", tpch::query(n, scale).unwrap()));
        if let Some(took) = duck_run
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("took="))
            .and_then(|t| t.trim().parse::<f64>().ok())
        {
            duck_run.secs = took;
        }
        let duck_wrong = if duck_run.ok {
            match expected.read_csv(&duck_run.stdout) {
                Ok(actual) => same_loosely(&expected, &actual),
                Err(e) => Some(format!("unreadable: {e}")),
            }
        } else {
            Some(format!("failed: {}", duck_run.stderr.trim()))
        };
        let verdict = |wrong: &Option<String>| if wrong.is_some() { "WRONG" } else { "right" };
        println!(
            "Q{n:02} {:>8.2} s {:>9} {:>8.2} s {:>5.2}x {:>9} {} {:>8.2} s {:>9} {}",
            df.secs,
            gib(df.rss),
            ember_run.secs,
            ember_run.secs / df.secs,
            gib(ember_run.rss),
            verdict(&ember_wrong),
            duck_run.secs,
            gib(duck_run.rss),
            verdict(&duck_wrong),
        );
        for (what, wrong) in [("Ember", &ember_wrong), ("DuckDB", &duck_wrong)] {
            if let Some(why) = wrong {
                println!("     {what}: {why}");
            }
        }
        counted += 1;
        right[0] += usize::from(ember_wrong.is_none());
        right[1] += usize::from(duck_wrong.is_none());
        for (i, r) in [&df, &ember_run, &duck_run].iter().enumerate() {
            totals[i] += r.secs;
            rss_max[i] = rss_max[i].max(r.rss);
        }
    }
    println!(
        "sum  {:>8.2} s {:>9} {:>8.2} s {:>5.2}x {:>9} {}/{counted} {:>8.2} s {:>9} {}/{counted}",
        totals[0],
        gib(rss_max[0]),
        totals[1],
        totals[1] / totals[0],
        gib(rss_max[1]),
        right[0],
        totals[2],
        gib(rss_max[2]),
        right[1],
    );
    println!("(sum line: total seconds, the largest peak RSS, answers right)");
}

fn sort_part() {
    let rows: u64 = env_or("EMBER_BENCH_SORT_ROWS", 100_000_000u64);
    let data = data_root().join(format!("views-{rows}"));
    if !data.join(".complete").exists() {
        eprintln!("generating {rows} view rows under {} ...", data.display());
        let made = Command::new(ember())
            .args(["gen", "views", "--force", "--files", "16", "--rows"])
            .arg(rows.to_string())
            .arg("--out")
            .arg(&data)
            .status()
            .unwrap();
        assert!(made.success());
        std::fs::write(data.join(".complete"), b"").unwrap();
    }
    let scratch = tempfile::tempdir_in(data_root()).unwrap();
    let script = |out: &Path| {
        format!(
            "CREATE EXTERNAL TABLE views STORED AS CSV LOCATION '{}/' OPTIONS ('format.has_header' 'true');\n\
             COPY (SELECT * FROM views ORDER BY user_id, event_time) TO '{}/' STORED AS PARQUET;\n",
            data.display(),
            out.display()
        )
    };
    let df_out = scratch.path().join("datafusion");
    let df = run(child("sort")
        .env("EMBER_CHILD_MEMORY", (2 * GB).to_string())
        .env("EMBER_CHILD_SCRIPT", script(&df_out)));
    assert!(df.ok, "DataFusion's sort failed: {}", df.stderr);
    let df_spilled: u64 = df
        .stdout
        .split("spilled_bytes=")
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_default();
    let _ = std::fs::remove_dir_all(&df_out);

    let ember_out = scratch.path().join("ember");
    let job = scratch.path().join("sort.sql");
    std::fs::write(&job, script(&ember_out)).unwrap();
    let ember_run = run(Command::new(ember())
        .args([
            "submit",
            "-v",
            "--master",
            "local[2]",
            "--driver-memory",
            "2g",
        ])
        .arg(format!(
            "--conf=datafusion.runtime.temp_directory={}",
            scratch.path().join("spill").display()
        ))
        .arg(&job));
    assert!(ember_run.ok, "Ember's sort failed: {}", ember_run.stderr);
    let ember_spilled: u64 = ember_run
        .stderr
        .lines()
        .filter(|l| l.contains("executor usage"))
        .filter_map(|l| l.split("spilled_bytes=").nth(1))
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    let written: u64 = std::fs::read_dir(&ember_out)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!("Sorting {rows} view rows into Parquet with 2 GB of memory, 2 cores");
    println!(
        "DataFusion: {:>8.1} s, peak RSS {}, spilled {}",
        df.secs,
        gib(df.rss),
        gib(df_spilled)
    );
    println!(
        "Ember:      {:>8.1} s ({:.2}x), peak RSS {}, spilled {}, wrote {}",
        ember_run.secs,
        ember_run.secs / df.secs,
        gib(ember_run.rss),
        gib(ember_spilled),
        gib(written)
    );
}

fn main() {
    if let Ok(what) = std::env::var("EMBER_BENCH_CHILD") {
        ember::allocator::configure();
        run_child(&what);
        return;
    }
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let part = std::env::var("EMBER_BENCH_PART").unwrap_or_default();
    if part.is_empty() || part == "sort" {
        sort_part();
    }
    if part.is_empty() || part == "tpch" {
        tpch_part();
    }
}
