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

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ember_testkit::{LoopbackCluster, processes, wait_gone};
use rexpect::process::PtyProcess;

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

/// A program on a pseudo-terminal, its output read as it comes (the
/// test harness's reader polls every 100 ms, too coarse to time with).
struct Term {
    process: PtyProcess,
    input: File,
    output: mpsc::Receiver<Vec<u8>>,
    seen: String,
}

impl Term {
    fn spawn(mut command: Command) -> Self {
        command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("TERM", "xterm")
            .env("EMBER_HISTORY", "/dev/null");
        let process = PtyProcess::new(command).unwrap();
        let input = process.get_file_handle().unwrap();
        let mut reader = input.try_clone().unwrap();
        let (sender, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = reader.read(&mut buffer) {
                if sender.send(buffer[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Self {
            process,
            input,
            output,
            seen: String::new(),
        }
    }

    /// Reads up to `needle`; returns what came before it.
    fn expect(&mut self, needle: &str) -> String {
        loop {
            if let Some(at) = self.seen.find(needle) {
                let before = self.seen[..at].to_string();
                self.seen.drain(..at + needle.len());
                return before;
            }
            match self.output.recv_timeout(Duration::from_secs(60)) {
                Ok(bytes) => self.seen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(e) => panic!("waiting for {needle:?} ({e}); seen: {:?}", self.seen),
            }
        }
    }

    fn send(&mut self, text: &str) {
        self.input.write_all(text.as_bytes()).unwrap();
        self.input.flush().unwrap();
    }

    fn line(&mut self, text: &str) {
        self.send(&format!("{text}\n"));
    }

    fn quit(&mut self) {
        self.line("\\quit");
        self.process.wait().unwrap();
    }
}

fn local_shell() -> Term {
    let mut command = Command::new(ember());
    command.args(["shell", "--master", "local[2]"]);
    Term::spawn(command)
}

/// Enter to the row count of `sql` typed at `shell`; `footer` is how the
/// count starts ("1 row in").
fn typed(shell: &mut Term, sql: &str, footer: &str) -> Duration {
    let start = Instant::now();
    shell.line(sql);
    shell.expect(footer);
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
        shell.expect("ember> ");
        prompt.add(start.elapsed());
        shell.quit();
    }

    let mut shell = local_shell();
    shell.expect("ember> ");
    shell.line(CREATE);
    shell.expect("OK");
    let mut one_typed = Figure::new("1-row query typed at a running shell");
    let mut one_submitted = Figure::new("1-row query as a whole `ember submit`");
    let mut grouped_typed = Figure::new("40k-row grouped query typed at a running shell");
    let mut grouped_submitted = Figure::new("40k-row table + grouped query, whole `submit`");
    for _ in 0..runs {
        one_typed.add(typed(&mut shell, ONE_ROW, "1 row in "));
        one_submitted.add(submitted(&one_row_job));
        grouped_typed.add(typed(&mut shell, GROUPED, "rows in "));
        grouped_submitted.add(submitted(&grouped_job));
    }
    let mut cancel = Figure::new("Ctrl-C to \"query cancelled\" (local[2])");
    for _ in 0..runs {
        shell.line(LONG);
        shell.expect("[Stage ");
        let start = Instant::now();
        shell.send("\x03");
        shell.expect("query cancelled");
        cancel.add(start.elapsed());
        shell.expect("ember> ");
    }
    shell.quit();

    let mut quit = Figure::new("\\quit to its executors gone (cluster, 2 executors)");
    let cluster = LoopbackCluster::start(ember(), 2, &[]);
    for run in 0..runs.div_ceil(3) {
        let name = format!("bench-shell-{run}");
        let command = cluster.ember(&["shell", "--total-executor-cores", "2", "--name", &name]);
        let mut shell = Term::spawn(command);
        shell.expect("application ");
        let app = shell.expect(" on ember://");
        shell.expect("ember> ");
        let started = Instant::now();
        let mut executors = processes("executor", &app);
        while executors.len() < 2 && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(5));
            executors = processes("executor", &app);
        }
        assert_eq!(executors.len(), 2, "two executors for {app}");
        let start = Instant::now();
        shell.line("\\quit");
        let gone = wait_gone(&executors, Duration::from_secs(15));
        assert!(gone.is_some(), "executors of {app} outlived the shell");
        quit.add(start.elapsed());
        shell.process.wait().unwrap();
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
