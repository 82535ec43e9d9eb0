//! The shell benchmark, with the release `ember` on a pseudo-terminal:
//!
//! - start of `ember shell --master local[2]` to its first prompt;
//! - a one-row query typed at a running shell, from Enter to its row count,
//!   against the same statement run as a whole `ember submit --master
//!   local[2]` process (start, run, exit), interleaved: what a warm session
//!   saves;
//! - the bundled 40,000-row grouped query, typed at a shell with the table
//!   registered, against a whole `submit` of the table and the query;
//! - Ctrl-C to "query cancelled" for a query that runs until cancelled;
//! - on a loopback cluster (a manager and two one-core workers), `\quit` to
//!   the last of the shell's two executor processes gone (/proc polled every
//!   millisecond).
//!
//! `cargo bench --bench shell`; `EMBER_BENCH_RUNS` sets the runs of each
//! figure (default 10; the cluster figure runs a third as often).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ember::loopback::{LoopbackCluster, processes, wait_gone};
use rexpect::reader::Options;
use rexpect::session::{PtySession, spawn_with_options};

const CREATE: &str = "CREATE EXTERNAL TABLE views STORED AS CSV LOCATION 'examples/data/views/' OPTIONS ('format.has_header' 'true');";
const GROUPED: &str = "SELECT country, count(*) AS n, sum(watch_seconds) AS s FROM views GROUP BY country ORDER BY n DESC;";
const ONE_ROW: &str = "SELECT 1 AS one;";
const LONG: &str =
    "SELECT count(*) AS n FROM generate_series(1, 50000000000) AS t(v) WHERE v % 7 = 3;";

fn ember() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ember"))
}

fn runs() -> usize {
    std::env::var("EMBER_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

fn spawn(mut command: Command) -> PtySession {
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("TERM", "xterm")
        .env("EMBER_HISTORY", "/dev/null");
    let options = Options::new()
        .timeout_ms(Some(60_000))
        .strip_ansi_escape_codes(true);
    spawn_with_options(command, options).unwrap()
}

fn local_shell() -> PtySession {
    let mut command = Command::new(ember());
    command.args(["shell", "--master", "local[2]"]);
    spawn(command)
}

/// Enter to the row count of `sql` typed at `shell`.
fn typed(shell: &mut PtySession, sql: &str) -> Duration {
    let start = Instant::now();
    shell.send_line(sql).unwrap();
    shell.exp_regex(r"rows? in [0-9.]+ s").unwrap();
    start.elapsed()
}

/// A whole `ember submit` of `job`, start to exit.
fn submitted(job: &Path) -> Duration {
    let start = Instant::now();
    let out = Command::new(ember())
        .args(["submit", "--master", "local[2]", "--format", "csv"])
        .arg(job)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed()
}

struct Figure {
    name: &'static str,
    ms: Vec<f64>,
}

impl Figure {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            ms: Vec::new(),
        }
    }

    fn add(&mut self, took: Duration) {
        self.ms.push(took.as_secs_f64() * 1e3);
    }

    fn median(&self) -> f64 {
        let mut xs = self.ms.clone();
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    }

    fn print(&self) {
        let min = self.ms.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.ms.iter().copied().fold(0.0, f64::max);
        println!(
            "  {:<52} median {:>8.2} ms   min {:>8.2}   max {:>8.2}   ({} runs)",
            self.name,
            self.median(),
            min,
            max,
            self.ms.len()
        );
    }
}

fn main() {
    let runs = runs();
    let dir = tempfile::tempdir().unwrap();
    let one_row_job = dir.path().join("one.sql");
    std::fs::write(&one_row_job, ONE_ROW).unwrap();
    let grouped_job = dir.path().join("grouped.sql");
    std::fs::write(&grouped_job, format!("{CREATE}\n{GROUPED}\n")).unwrap();

    let mut prompt = Figure::new("start to first prompt (local[2])");
    for _ in 0..runs {
        let start = Instant::now();
        let mut shell = local_shell();
        shell.exp_string("ember> ").unwrap();
        prompt.add(start.elapsed());
        shell.send_line("\\quit").unwrap();
        shell.exp_eof().unwrap();
    }

    let mut shell = local_shell();
    shell.exp_string("ember> ").unwrap();
    shell.send_line(CREATE).unwrap();
    shell.exp_string("OK").unwrap();
    let mut one_typed = Figure::new("1-row query typed at a running shell");
    let mut one_submitted = Figure::new("1-row query as a whole `ember submit`");
    let mut grouped_typed = Figure::new("40k-row grouped query typed at a running shell");
    let mut grouped_submitted = Figure::new("40k-row table + grouped query, whole `submit`");
    for _ in 0..runs {
        one_typed.add(typed(&mut shell, ONE_ROW));
        one_submitted.add(submitted(&one_row_job));
        grouped_typed.add(typed(&mut shell, GROUPED));
        grouped_submitted.add(submitted(&grouped_job));
    }
    let mut cancel = Figure::new("Ctrl-C to \"query cancelled\" (local[2])");
    for _ in 0..runs {
        shell.send_line(LONG).unwrap();
        shell.exp_regex(r"\[Stage \d+:").unwrap();
        let start = Instant::now();
        shell.send_control('c').unwrap();
        shell.exp_string("query cancelled").unwrap();
        cancel.add(start.elapsed());
        shell.exp_string("ember> ").unwrap();
    }
    shell.send_line("\\quit").unwrap();
    shell.exp_eof().unwrap();

    let mut quit = Figure::new("\\quit to its executors gone (cluster, 2 executors)");
    let cluster = LoopbackCluster::start(ember(), 2, &[]);
    for run in 0..runs.div_ceil(3) {
        let name = format!("bench-shell-{run}");
        let mut command = cluster.ember(&["shell", "--total-executor-cores", "2", "--name", &name]);
        command.current_dir(env!("CARGO_MANIFEST_DIR"));
        let mut shell = spawn(command);
        let (_, banner) = shell.exp_regex(r"application app-[0-9a-z-]+").unwrap();
        let app = banner.trim_start_matches("application ").to_string();
        shell.exp_string("ember> ").unwrap();
        let started = Instant::now();
        let mut executors = processes("executor", &app);
        while executors.len() < 2 && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(5));
            executors = processes("executor", &app);
        }
        assert_eq!(executors.len(), 2, "two executors for {app}");
        let start = Instant::now();
        shell.send_line("\\quit").unwrap();
        let gone = wait_gone(&executors, Duration::from_secs(15));
        assert!(gone.is_some(), "executors of {app} outlived the shell");
        quit.add(start.elapsed());
        shell.exp_eof().unwrap();
        // The cores come back before the next run asks for them.
        cluster.wait_for("free cores", Duration::from_secs(10), |s| {
            s["workers"]
                .as_array()
                .is_some_and(|w| w.iter().all(|w| w["cores_used"] == 0))
        });
    }
    drop(cluster);

    println!("ember shell ({runs} runs each; whole-process figures include start and exit)");
    for figure in [
        &prompt,
        &one_typed,
        &one_submitted,
        &grouped_typed,
        &grouped_submitted,
        &cancel,
        &quit,
    ] {
        figure.print();
    }
    println!(
        "  a warm shell against a whole submit: 1-row query {:.1}x faster, grouped query {:.1}x faster",
        one_submitted.median() / one_typed.median(),
        grouped_submitted.median() / grouped_typed.median()
    );
}
