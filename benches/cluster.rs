//! The cluster benchmark: a cluster manager and two one-core workers
//! (`--cores 1 --memory 2g`) started by this process on loopback, with the
//! release `ember` binary, and `ember submit` in client mode against it:
//!
//! - submit to exit of a 1-row job (`--total-executor-cores 2`), whole
//!   process, against `--master local[2]` run interleaved with it;
//! - the 10M-row watch-time aggregation of `benches/watch_time.rs` (same
//!   data, same query), whole process, against plain DataFusion in this
//!   process with 2 target partitions, interleaved; the cluster's CSV is
//!   checked once against `local[2]`'s;
//! - from SIGKILL, and from SIGSTOP, of a client-mode driver running a long
//!   job to the last of its executor processes gone (/proc polled every
//!   millisecond; a zombie counts as gone);
//! - VmRSS of an idle executor: the long job is one task, so of its two
//!   registered executors one never gets work (told apart by CPU time);
//! - the 10M-row job with one executor SIGKILLed halfway through (at half
//!   the fault-free median), submit to exit, against the fault-free runs:
//!   the time one executor kill adds (its tasks and lost map output run
//!   again, a replacement joins); every such run's rows are checked;
//! - cancellation: from Ctrl-C (SIGINT to `ember submit`) and from
//!   `ember kill APP` (the command's start) to the last executor of a
//!   running job gone — its running task stopped and its cores given back.
//!
//! Between runs the bench waits for every executor to exit and every core to
//! be free, so each submission starts on an idle cluster. A cluster job that
//! fails is counted and run again, never timed (three failures in a row stop
//! the bench); task failures its driver logged (retries) are counted too. A
//! summary table closes the report: each figure, its target, PASS or MISS.
//!
//! `cargo bench --bench cluster`; `EMBER_BENCH_ROWS` changes the size of the
//! big input (10M rows in 8 files, generated once under the target dir),
//! `EMBER_BENCH_RUNS` the runs of the 10M-row job and the repetitions of each
//! kill case (default 3), `EMBER_BENCH_TINY_RUNS` the runs of the 1-row job
//! (default 5).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ember_testkit::env_or;
use std::ops::Deref;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use datafusion::prelude::{SessionConfig, SessionContext};
use ember::datagen::{cached_views, one_row_views, views_ddl};
use ember_testkit::{LoopbackCluster, alive, app, command_line, signal, wait_gone};

const QUERY: &str = "SELECT video_id, SUM(watch_seconds)/60.0 AS minutes, COUNT(*) AS views \
                     FROM views GROUP BY video_id ORDER BY minutes DESC LIMIT 10";

/// One task scanning billions of generated rows: runs until killed.
const LONG_JOB: &str =
    "SELECT count(*) AS n FROM generate_series(1, 50000000000) AS t(v) WHERE v % 7 = 3;\n";

/// How long a signalled driver's executors may take before the bench gives
/// up on them (and kills them itself).
const GONE_LIMIT: Duration = Duration::from_secs(15);

fn ember() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ember"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn datafusion_query(dir: &Path) -> Duration {
    let started = Instant::now();
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    ctx.sql(&views_ddl(dir)).await.unwrap();
    let rows = ctx.sql(QUERY).await.unwrap().collect().await.unwrap();
    assert!(rows.iter().map(|b| b.num_rows()).sum::<usize>() > 0);
    started.elapsed()
}

// ---------------------------------------------------------------- processes

/// The parent of `pid`.
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command: state, then the parent's PID.
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Live children of `parents` running `ember --role executor`, of
/// application `app` (any, without one).
fn executors(parents: &[u32], app: Option<&str>) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if !parent(pid).is_some_and(|p| parents.contains(&p)) {
            continue;
        }
        let args = command_line(pid);
        let is_executor = args
            .windows(2)
            .any(|w| w[0] == "--role" && w[1] == "executor");
        let of_app = app.is_none_or(|id| args.windows(2).any(|w| w[0] == "--app" && w[1] == id));
        if is_executor && of_app && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    ember::engine::memory::process_memory(Some(pid), "VmRSS").map(|bytes| bytes / 1024)
}

/// User plus system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

// ------------------------------------------------------------------ cluster

/// The loopback cluster (a manager and two one-core workers) with what the
/// bench adds: client-mode submissions on both workers, and waiting for an
/// idle cluster between runs. Everything is stopped on drop, a failing run
/// included.
struct Cluster(Option<LoopbackCluster>);

impl Deref for Cluster {
    type Target = LoopbackCluster;
    fn deref(&self) -> &LoopbackCluster {
        self.0.as_ref().unwrap()
    }
}

impl Cluster {
    fn start() -> Self {
        Cluster(Some(LoopbackCluster::start(ember(), 2, &[])))
    }

    /// `ember submit` in client mode on both workers.
    fn submit(&self, name: &str, job: &Path) -> Command {
        let mut command = self.ember(&[
            "submit",
            "--total-executor-cores",
            "2",
            "--format",
            "csv",
            "--name",
            name,
        ]);
        command.arg(job);
        command
    }

    /// Executor processes of `app` (of any application, without one).
    fn executors(&self, app: Option<&str>) -> Vec<u32> {
        executors(&self.worker_pids(), app)
    }

    /// Waits until no executor runs and every core is free.
    fn wait_idle(&self) {
        let start = Instant::now();
        while !self.executors(None).is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "executors still running: {:?}",
                self.executors(None)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        self.wait_for("every core to be free", Duration::from_secs(20), |s| {
            s["workers"]
                .as_array()
                .is_some_and(|w| w.iter().all(|w| w["cores_used"] == 0))
        });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let left = self.executors(None);
        // Stops the workers (which stop their executors), then the manager.
        drop(self.0.take());
        for pid in left.into_iter().filter(|p| alive(*p)) {
            eprintln!("killing executor {pid}, left behind by its worker");
            signal(pid, libc::SIGKILL);
        }
    }
}

// ------------------------------------------------------------------- timing

/// A finished `ember submit`: wall time, stdout, whether it succeeded and
/// the task failures its driver logged (each retried, or the job failed).
struct Run {
    took: Duration,
    stdout: String,
    ok: bool,
    failed_tasks: usize,
}

/// Runs a command to completion; its stderr is passed on.
fn timed(mut command: Command) -> Run {
    let started = Instant::now();
    let out = command.stdin(Stdio::null()).output().unwrap();
    let took = started.elapsed();
    let stderr = text(&out.stderr);
    eprint!("{stderr}");
    if !out.status.success() {
        eprintln!("FAILED ({}): {command:?}", out.status);
    }
    Run {
        took,
        stdout: text(&out.stdout),
        ok: out.status.success(),
        failed_tasks: stderr.matches("task failed").count(),
    }
}

/// Runs a command that must succeed.
fn timed_ok(command: Command) -> Run {
    let run = timed(command);
    assert!(run.ok, "a job the bench relies on failed");
    run
}

/// Cluster jobs run, and what went wrong in them.
#[derive(Default)]
struct Tally {
    jobs: usize,
    failed_jobs: usize,
    failed_tasks: usize,
}

impl Tally {
    fn add(&mut self, run: &Run) {
        self.jobs += 1;
        self.failed_jobs += usize::from(!run.ok);
        self.failed_tasks += run.failed_tasks;
    }

    /// The first of up to three attempts that succeeds; a failed job
    /// never counts as a measurement.
    fn first_ok(&mut self, mut attempt: impl FnMut() -> Run) -> Run {
        for _ in 0..3 {
            let run = attempt();
            self.add(&run);
            if run.ok {
                return run;
            }
        }
        panic!("the cluster job failed three times in a row");
    }
}

fn local_submit(job: &Path) -> Command {
    let mut command = Command::new(ember());
    command
        .args(["submit", "--master", "local[2]", "--format", "csv"])
        .arg(job);
    command
}

/// A long client-mode job running on two executors: the submit process
/// and the executors' PIDs.
fn long_job(cluster: &Cluster, job: &Path, name: &str) -> (Child, Vec<u32>) {
    let submit = cluster
        .submit(name, job)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = cluster.wait_for("two executors", Duration::from_secs(30), |s| {
        app(s, name).is_some_and(|a| {
            a["state"] == "RUNNING" && a["executors"].as_array().is_some_and(|e| e.len() == 2)
        })
    });
    let id = app(&status, name).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let start = Instant::now();
    let mut pids = cluster.executors(Some(&id));
    while pids.len() < 2 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(2));
        pids = cluster.executors(Some(&id));
    }
    assert_eq!(pids.len(), 2, "two executor processes for {id}");
    (submit, pids)
}

/// The idle and the busy executor's RSS (KiB) and CPU ticks over `window`.
struct Sample {
    idle_kib: u64,
    busy_kib: u64,
    idle_ticks: u64,
    busy_ticks: u64,
}

fn sample_executors(pids: &[u32], window: Duration) -> Option<Sample> {
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect::<Option<_>>()?;
    std::thread::sleep(window);
    let after: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect::<Option<_>>()?;
    let rss: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect::<Option<_>>()?;
    let ticks: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let (idle, busy) = if ticks[0] <= ticks[1] { (0, 1) } else { (1, 0) };
    Some(Sample {
        idle_kib: rss[idle],
        busy_kib: rss[busy],
        idle_ticks: ticks[idle],
        busy_ticks: ticks[busy],
    })
}

fn median(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn min(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

fn row(label: &str, xs: &[f64], unit: &str) {
    println!(
        "{label:<50} median {:>9.3} {unit}   min {:>9.3}   max {:>9.3}",
        median(xs),
        min(xs),
        max(xs)
    );
}

fn tally_row(tally: &Tally) {
    println!(
        "{:<50} {} of {} cluster jobs failed; {} task failures logged",
        "  failures (failed jobs are run again, not timed)",
        tally.failed_jobs,
        tally.jobs,
        tally.failed_tasks
    );
}

struct Verdict {
    figure: String,
    value: String,
    target: String,
    pass: bool,
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rows = env_or("EMBER_BENCH_ROWS", 10_000_000);
    let runs = env_or("EMBER_BENCH_RUNS", 3).max(1) as usize;
    let tiny_runs = env_or("EMBER_BENCH_TINY_RUNS", 5).max(1) as usize;
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-data");
    let big = cached_views(&root, rows, 8).unwrap();
    let tiny = one_row_views(&root).unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let started = Instant::now();
    let cluster = Cluster::start();
    eprintln!(
        "cluster up at {} in {:.0} ms",
        cluster.master,
        started.elapsed().as_secs_f64() * 1e3
    );
    let job = |name: &str, sql: &str| {
        let path = cluster.dir.path().join(name);
        std::fs::write(&path, sql).unwrap();
        path
    };
    let big_job = job(
        "watch_time_big.sql",
        &format!("{};\n{QUERY};\n", views_ddl(&big)),
    );
    let tiny_job = job(
        "watch_time_tiny.sql",
        &format!("{};\n{QUERY};\n", views_ddl(&tiny)),
    );
    let long = job("long.sql", LONG_JOB);
    let mut submissions = 0;
    let mut name = |what: &str| {
        submissions += 1;
        format!("bench-{what}-{submissions}")
    };

    // 1. A 1-row job: the fixed cost of a submission. Failed cluster jobs
    // are counted and run again, never timed.
    let mut tiny_tally = Tally::default();
    let expected = timed_ok(local_submit(&tiny_job)).stdout;
    let got = tiny_tally
        .first_ok(|| {
            let run = timed(cluster.submit(&name("tiny"), &tiny_job));
            cluster.wait_idle();
            run
        })
        .stdout;
    assert_eq!(
        got, expected,
        "the cluster's 1-row job differs from local[2]'s"
    );
    let (mut tiny_ms, mut tiny_local_ms) = (vec![], vec![]);
    for run in 0..tiny_runs {
        let c = tiny_tally
            .first_ok(|| {
                let run = timed(cluster.submit(&name("tiny"), &tiny_job));
                cluster.wait_idle();
                run
            })
            .took;
        let l = timed_ok(local_submit(&tiny_job)).took;
        eprintln!(
            "1-row job {}/{tiny_runs}: cluster {:.1} ms, local[2] {:.1} ms",
            run + 1,
            c.as_secs_f64() * 1e3,
            l.as_secs_f64() * 1e3
        );
        tiny_ms.push(c.as_secs_f64() * 1e3);
        tiny_local_ms.push(l.as_secs_f64() * 1e3);
    }

    // 2. The 10M-row aggregation; checked once against local[2].
    let mut big_tally = Tally::default();
    let expected = timed_ok(local_submit(&big_job)).stdout;
    let got = big_tally
        .first_ok(|| {
            let run = timed(cluster.submit(&name("big"), &big_job));
            cluster.wait_idle();
            run
        })
        .stdout;
    assert_eq!(
        got, expected,
        "the cluster's watch-time rows differ from local[2]'s"
    );
    assert!(expected.lines().count() > 1, "no rows: {expected}");
    runtime.block_on(datafusion_query(&big));
    let (mut big_s, mut df_s, mut big_ratios) = (vec![], vec![], vec![]);
    for run in 0..runs {
        let c = big_tally
            .first_ok(|| {
                let run = timed(cluster.submit(&name("big"), &big_job));
                cluster.wait_idle();
                run
            })
            .took;
        let d = runtime.block_on(datafusion_query(&big));
        eprintln!(
            "10M-row job {}/{runs}: cluster {:.3} s, datafusion {:.3} s",
            run + 1,
            c.as_secs_f64(),
            d.as_secs_f64()
        );
        big_s.push(c.as_secs_f64());
        df_s.push(d.as_secs_f64());
        big_ratios.push(c.as_secs_f64() / d.as_secs_f64());
    }

    // 3. One executor killed halfway through the 10M-row job.
    let half = Duration::from_secs_f64(median(&big_s) / 2.0);
    let mut killed_s = vec![];
    for run in 0..runs {
        let run_name = name("big-killed");
        let mut submit = cluster
            .submit(&run_name, &big_job)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        let mut victim = None;
        while t0.elapsed() < half || victim.is_none() {
            if victim.is_none() {
                let status = cluster.status().unwrap_or_default();
                if let Some(id) = app(&status, &run_name).and_then(|a| a["id"].as_str()) {
                    victim = cluster.executors(Some(id)).first().copied();
                }
            }
            std::thread::sleep(Duration::from_millis(5));
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no executor to kill"
            );
        }
        let victim = victim.unwrap_or_default();
        let still_running = submit.try_wait().unwrap().is_none();
        signal(victim, libc::SIGKILL);
        let out = submit.wait_with_output().unwrap();
        let took = t0.elapsed();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout),
            expected,
            "rows after an executor kill differ from local[2]'s"
        );
        eprintln!(
            "10M-row job {}/{runs}, executor {victim} killed at {:.2} s{}: {:.3} s",
            run + 1,
            half.as_secs_f64(),
            if still_running {
                ""
            } else {
                " (after the job ended)"
            },
            took.as_secs_f64()
        );
        if still_running {
            killed_s.push(took.as_secs_f64());
        }
        cluster.wait_idle();
    }
    let added_s: Vec<f64> = killed_s.iter().map(|k| k - median(&big_s)).collect();

    // 4. Cancellation: Ctrl-C and `ember kill` of a running job.
    let (mut sigint_ms, mut ember_kill_ms) = (vec![], vec![]);
    for run in 0..runs {
        for by_command in [false, true] {
            let run_name = name("cancel");
            let (mut submit, pids) = long_job(&cluster, &long, &run_name);
            std::thread::sleep(Duration::from_millis(300));
            let status = cluster.status().unwrap_or_default();
            let id = app(&status, &run_name)
                .and_then(|a| a["id"].as_str())
                .unwrap_or_default()
                .to_string();
            let t0 = Instant::now();
            if by_command {
                let mut kill = cluster.ember(&["kill", &id]);
                kill.stdout(Stdio::null()).stderr(Stdio::null());
                kill.spawn().unwrap().wait().unwrap();
            } else {
                signal(submit.id(), libc::SIGINT);
            }
            let gone = wait_gone(&pids, GONE_LIMIT).map(|_| t0.elapsed());
            let _ = submit.wait();
            let label = if by_command { "ember kill" } else { "Ctrl-C" };
            let ms = gone.map_or(f64::INFINITY, |d| d.as_secs_f64() * 1e3);
            eprintln!(
                "{label} {}/{runs}: executors gone after {ms:.1} ms",
                run + 1
            );
            if by_command {
                ember_kill_ms.push(ms);
            } else {
                sigint_ms.push(ms);
            }
            if gone.is_none() {
                for pid in &pids {
                    signal(*pid, libc::SIGKILL);
                }
            }
            cluster.wait_idle();
        }
    }

    // 5 and 6. Signalled drivers; the idle executor's RSS before each signal.
    let (mut kill_ms, mut stop_ms) = (vec![], vec![]);
    let (mut idle_mib, mut busy_mib) = (vec![], vec![]);
    for run in 0..runs {
        for (sig, label, out) in [
            (libc::SIGKILL, "SIGKILL", &mut kill_ms),
            (libc::SIGSTOP, "SIGSTOP", &mut stop_ms),
        ] {
            let (mut submit, pids) = long_job(&cluster, &long, &name("long"));
            // Registered a moment ago; let the task start before telling
            // the executors apart.
            std::thread::sleep(Duration::from_millis(200));
            if let Some(s) = sample_executors(&pids, Duration::from_millis(300)) {
                eprintln!(
                    "  executors: idle {:.1} MiB ({} ticks), busy {:.1} MiB ({} ticks)",
                    s.idle_kib as f64 / 1024.0,
                    s.idle_ticks,
                    s.busy_kib as f64 / 1024.0,
                    s.busy_ticks
                );
                if s.idle_ticks * 4 < s.busy_ticks.max(1) {
                    idle_mib.push(s.idle_kib as f64 / 1024.0);
                    busy_mib.push(s.busy_kib as f64 / 1024.0);
                } else {
                    eprintln!("  (no executor was clearly idle; sample dropped)");
                }
            }
            let t0 = Instant::now();
            signal(submit.id(), sig);
            let gone = wait_gone(&pids, GONE_LIMIT).map(|_| t0.elapsed());
            if sig == libc::SIGSTOP {
                signal(submit.id(), libc::SIGKILL);
            }
            let _ = submit.wait();
            match gone {
                Some(d) => {
                    eprintln!(
                        "{label} {}/{runs}: executors gone after {:.1} ms",
                        run + 1,
                        d.as_secs_f64() * 1e3
                    );
                    out.push(d.as_secs_f64() * 1e3);
                }
                None => {
                    eprintln!(
                        "{label} {}/{runs}: executors still there after {GONE_LIMIT:?}; killing them",
                        run + 1
                    );
                    for pid in &pids {
                        signal(*pid, libc::SIGKILL);
                    }
                    out.push(f64::INFINITY);
                }
            }
            cluster.wait_idle();
        }
    }
    drop(cluster);

    println!(
        "\ncluster benchmark: manager + 2 workers x 1 core on loopback, client mode, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    row(
        &format!("1-row job, cluster, submit to exit ({tiny_runs} runs)"),
        &tiny_ms,
        "ms",
    );
    row("1-row job, local[2], submit to exit", &tiny_local_ms, "ms");
    let tiny_ratios: Vec<f64> = tiny_ms
        .iter()
        .zip(&tiny_local_ms)
        .map(|(c, l)| c / l)
        .collect();
    row("ratio cluster / local[2] (per run)", &tiny_ratios, "x ");
    tally_row(&tiny_tally);
    row(
        &format!("{rows}-row job, cluster, submit to exit ({runs} runs)"),
        &big_s,
        "s ",
    );
    row("plain DataFusion, 2 partitions (in-process)", &df_s, "s ");
    row("ratio cluster / DataFusion (per run)", &big_ratios, "x ");
    tally_row(&big_tally);
    row(
        "same job, one executor SIGKILLed halfway, submit to exit",
        &killed_s,
        "s ",
    );
    row("time one executor kill adds", &added_s, "s ");
    row("Ctrl-C -> last executor gone", &sigint_ms, "ms");
    row(
        "`ember kill APP` -> last executor gone",
        &ember_kill_ms,
        "ms",
    );
    row("SIGKILLed driver -> last executor gone", &kill_ms, "ms");
    row("SIGSTOPped driver -> last executor gone", &stop_ms, "ms");
    if !idle_mib.is_empty() {
        row("idle executor VmRSS", &idle_mib, "MiB");
        row("busy executor VmRSS (for comparison)", &busy_mib, "MiB");
    }

    let mut verdicts = vec![
        Verdict {
            figure: "1-row job, cluster, submit to exit (median)".into(),
            value: format!("{:.1} ms", median(&tiny_ms)),
            target: "<= 400 ms".into(),
            pass: median(&tiny_ms) <= 400.0,
        },
        Verdict {
            figure: format!("{rows}-row job, cluster / DataFusion (median)"),
            value: format!("{:.2}x", median(&big_ratios)),
            target: "<= 1.6x".into(),
            pass: median(&big_ratios) <= 1.6,
        },
        Verdict {
            figure: "one executor kill: runs that still succeeded".into(),
            value: format!("{} of {runs}", killed_s.len()),
            target: format!("{runs} of {runs}"),
            pass: killed_s.len() == runs,
        },
        Verdict {
            figure: "Ctrl-C -> executors gone (max)".into(),
            value: format!("{:.1} ms", max(&sigint_ms)),
            target: "<= 200 ms".into(),
            pass: max(&sigint_ms) <= 200.0,
        },
        Verdict {
            figure: "`ember kill APP` -> executors gone (max)".into(),
            value: format!("{:.1} ms", max(&ember_kill_ms)),
            target: "<= 500 ms".into(),
            pass: max(&ember_kill_ms) <= 500.0,
        },
        Verdict {
            figure: "SIGKILLed driver -> executors gone (max)".into(),
            value: format!("{:.1} ms", max(&kill_ms)),
            target: "<= 1000 ms".into(),
            pass: max(&kill_ms) <= 1000.0,
        },
        Verdict {
            figure: "SIGSTOPped driver -> executors gone (max)".into(),
            value: format!("{:.1} ms", max(&stop_ms)),
            target: "<= 1000 ms".into(),
            pass: max(&stop_ms) <= 1000.0,
        },
    ];
    let failed = tiny_tally.failed_jobs + big_tally.failed_jobs;
    verdicts.push(Verdict {
        figure: "cluster jobs that failed (1-row and big)".into(),
        value: format!("{failed} of {}", tiny_tally.jobs + big_tally.jobs),
        target: "0".into(),
        pass: failed == 0,
    });
    // 40 MB read as 10^6 bytes: the stricter reading of the target.
    let idle_mb = max(&idle_mib) * 1024.0 * 1024.0 / 1e6;
    verdicts.push(Verdict {
        figure: "idle executor VmRSS (max)".into(),
        value: if idle_mib.is_empty() {
            "no sample".into()
        } else {
            format!("{idle_mb:.1} MB ({:.1} MiB)", max(&idle_mib))
        },
        target: "<= 40 MB".into(),
        pass: !idle_mib.is_empty() && idle_mb <= 40.0,
    });
    println!(
        "\n{:<50} {:>22}  {:>11}  result",
        "figure", "value", "target"
    );
    for v in &verdicts {
        println!(
            "{:<50} {:>22}  {:>11}  {}",
            v.figure,
            v.value,
            v.target,
            if v.pass { "PASS" } else { "MISS" }
        );
    }
}
