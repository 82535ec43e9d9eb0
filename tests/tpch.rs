//! TPC-H end to end: the 22 queries, as the scripts `ember gen tpch`
//! writes, submitted in every mode (`local`, `local[3]`, client and cluster
//! mode on a loopback cluster), each answer checked against plain
//! DataFusion in this process (one partition) on the same Parquet files.

use ember_testkit::BoundedCommand;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ember::tpch::{self, Answer, QUERIES, Table};

use crate::cluster::Cluster;
use crate::support::{plain, text};

/// Small enough for CI on two cores, large enough that every query but
/// one has rows.
const SCALE: f64 = 0.01;
const FILES: usize = 4;

/// How long a cluster-mode driver may take to end.
const DRIVER_LIMIT: Duration = Duration::from_secs(60);

fn ember() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ember"));
    command.env_remove("RUST_LOG");
    command
}

/// The tables at [`SCALE`], generated once under the target dir.
fn data() -> &'static Path {
    static DATA: OnceLock<PathBuf> = OnceLock::new();
    DATA.get_or_init(|| {
        tpch::cached_tpch(Path::new(env!("CARGO_TARGET_TMPDIR")), SCALE, FILES).unwrap()
    })
}

fn script(dir: &Path, n: u32) -> PathBuf {
    dir.join("queries").join(format!("q{n:02}.sql"))
}

/// Query `n`'s answer from DataFusion with one partition: the reference.
fn reference(dir: &Path, n: u32, scale: f64) -> Answer {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(tpch::datafusion_answer(dir, n, scale, 1))
        .unwrap_or_else(|e| panic!("Q{n} on plain DataFusion: {e}"))
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Local,
    Local3,
    Client,
    Cluster,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Local => "local",
            Mode::Local3 => "local[3]",
            Mode::Client => "client mode",
            Mode::Cluster => "cluster mode",
        })
    }
}

/// The CSV a run printed, or why it failed.
fn printed(out: &Output) -> Result<String, String> {
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(last_lines(&text(&out.stderr)))
    }
}

/// The error a failed run ended with (from its last `error:` line on), or
/// the last lines of its log.
fn last_lines(log: &str) -> String {
    let log = plain(log);
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = lines
        .iter()
        .rposition(|l| l.starts_with("error:"))
        .unwrap_or(lines.len().saturating_sub(4));
    lines[from..].join("\n      ")
}

fn run_local(master: &str, job: &Path) -> Result<String, String> {
    let mut command = ember();
    command.args(["submit", "--master", master, "--format", "csv"]);
    if master == "local[3]" {
        // Many small reduce partitions, joined after each map stage in
        // runs of about 64 KB: at this scale, into a different number of
        // tasks for each shuffle.
        command.args([
            "--conf=ember.sql.shuffle.partitions=12",
            "--conf=ember.sql.adaptive.advisoryPartitionSizeInBytes=64k",
            "--conf=ember.sql.adaptive.coalescePartitions.minPartitionSize=1",
        ]);
    }
    printed(&command.arg(job).bounded_output().unwrap())
}

/// Whether client-mode runs of query `n` read the other executor's
/// shuffle files from disk: odd queries do (the default), even ones have
/// every block sent over the network, so both ways run on real plans.
fn reads_host_files(n: u32) -> bool {
    n % 2 == 1
}

fn run_client(cluster: &Cluster, n: u32, job: &Path) -> Result<String, String> {
    let name = format!("tpch-q{n:02}-client");
    let mut command = cluster.ember(&[
        "submit",
        "--format",
        "csv",
        "--total-executor-cores",
        "2",
        "--name",
        &name,
    ]);
    if !reads_host_files(n) {
        command.args(["--conf", "ember.shuffle.readHostLocalDisk=false"]);
    }
    printed(&command.arg(job).bounded_output().unwrap())
}

/// Shuffle blocks the executors of a client-mode run of query `n` read
/// from each other's files and had sent over the network, as `ember
/// status` reports them once the application ended.
fn blocks_read(cluster: &Cluster, n: u32) -> (u64, u64) {
    let name = format!("tpch-q{n:02}-client");
    let status = cluster.wait_for(
        "a client-mode TPC-H application to end",
        Duration::from_secs(10),
        |s| ember_testkit::app(s, &name).is_some_and(|a| a["state"] == "FINISHED"),
    );
    let app = ember_testkit::app(&status, &name).unwrap();
    let executors = app["removed_executors"].as_array().unwrap();
    let count = |key: &str| {
        executors
            .iter()
            .map(|e| e["usage"][key].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    (
        count("shuffle_blocks_read_on_host"),
        count("shuffle_blocks_fetched"),
    )
}

/// Submits in cluster mode, waits for the driver to end, and reads what
/// it printed (or its log) with `ember logs`. The driver takes one of the
/// two cores, so its one executor core would plan every stage as one task;
/// two shuffle partitions cut each stage in two, as in client mode.
fn run_cluster_mode(cluster: &Cluster, n: u32, job: &Path) -> Result<String, String> {
    let name = format!("tpch-q{n:02}-cluster");
    let out = cluster
        .ember(&["submit", "--deploy-mode", "cluster", "--name", &name])
        .args(["--conf", "ember.sql.shuffle.partitions=2"])
        .arg(job)
        .bounded_output()
        .unwrap();
    let id = printed(&out)?.trim().to_string();
    let started = Instant::now();
    let state = loop {
        let state = ember_testkit::LoopbackCluster::status(cluster)
            .and_then(|s| ember_testkit::driver(&s, &id).map(|d| d["state"].clone()));
        if let Some(state) = state
            .as_ref()
            .and_then(|s| s.as_str())
            .filter(|s| ["FINISHED", "FAILED", "KILLED"].contains(s))
        {
            break state.to_string();
        }
        if started.elapsed() > DRIVER_LIMIT {
            return Err(format!(
                "driver {id} did not end within {DRIVER_LIMIT:?} (state {state:?})"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if state == "FINISHED" {
        printed(&cluster.run(&["logs", &id]))
    } else {
        let log = cluster.run(&["logs", &id, "--stderr"]);
        Err(format!(
            "driver {id} {state}: {}",
            last_lines(&text(&log.stdout))
        ))
    }
}

/// What was wrong with one (query, mode), or `None`.
fn check(n: u32, mode: Mode, expected: &Answer, run: Result<String, String>) -> Option<String> {
    let why = match run {
        Err(error) => format!("failed:\n      {error}"),
        Ok(csv) => match expected.read_csv(&csv) {
            Err(e) => {
                format!("printed rows that do not read as the expected columns ({e}):\n{csv}")
            }
            Ok(actual) => expected.difference(&actual)?,
        },
    };
    Some(format!("Q{n:02} in {mode}: {why}"))
}

#[test]
fn every_tpch_query_gives_datafusions_answer_in_every_mode() {
    let dir = data();
    let started = Instant::now();
    let expected: Vec<(u32, Answer)> = QUERIES.map(|n| (n, reference(dir, n, SCALE))).collect();
    let empty: Vec<u32> = expected
        .iter()
        .filter(|(_, a)| a.rows.is_empty())
        .map(|(n, _)| *n)
        .collect();
    // A query without rows proves little: at this scale every one has some.
    assert!(
        empty.is_empty(),
        "queries with no rows on DataFusion: {empty:?}"
    );

    let mut failures = Vec::new();
    let mut runs = 0;
    for (mode, master) in [(Mode::Local, "local"), (Mode::Local3, "local[3]")] {
        for (n, answer) in &expected {
            runs += 1;
            failures.extend(check(*n, mode, answer, run_local(master, &script(dir, *n))));
        }
    }
    match std::panic::catch_unwind(Cluster::start) {
        Ok(cluster) => {
            // Blocks from files on this host and over the network, over
            // the runs that read files and those that may not.
            let mut on_host = [(0, 0); 2];
            for (n, answer) in &expected {
                runs += 2;
                let job = script(dir, *n);
                let client = run_client(&cluster, *n, &job);
                if client.is_ok() {
                    let (host, net) = blocks_read(&cluster, *n);
                    let way = &mut on_host[usize::from(reads_host_files(*n))];
                    *way = (way.0 + host, way.1 + net);
                }
                failures.extend(check(*n, Mode::Client, answer, client));
                failures.extend(check(
                    *n,
                    Mode::Cluster,
                    answer,
                    run_cluster_mode(&cluster, *n, &job),
                ));
            }
            // Executors on one host read each other's shuffle files (a
            // rare block goes over the network, when its file could not
            // be located twice); told not to, they send every block.
            let [network_only, host_files] = on_host;
            assert!(
                host_files.0 > 0 && host_files.1 * 20 <= host_files.0,
                "with host-local reads on, blocks read from files / sent: {host_files:?}"
            );
            assert!(
                network_only.0 == 0 && network_only.1 > 0,
                "with host-local reads off, blocks read from files / sent: {network_only:?}"
            );
        }
        Err(_) => failures.push(
            "client and cluster mode: the loopback cluster did not start (its panic is above)"
                .to_string(),
        ),
    }
    eprintln!(
        "{runs} TPC-H runs at scale factor {SCALE} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {runs} TPC-H runs differ from DataFusion:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn gen_tpch_refuses_a_full_dir_and_its_scripts_run_as_written() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("tpch");
    let scale = 0.002;
    let gen_tpch = |extra: &[&str]| {
        ember()
            .args(["gen", "tpch", "--scale", &scale.to_string(), "--files", "2"])
            .arg("--out")
            .arg(&out)
            .args(extra)
            .bounded_output()
            .unwrap()
    };
    let first = gen_tpch(&[]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        text(&first.stderr).contains("run a query: ember submit"),
        "{}",
        text(&first.stderr)
    );
    for table in Table::ALL {
        let files = std::fs::read_dir(out.join(table.name())).unwrap().count();
        assert_eq!(
            files,
            if table.splits() { 2 } else { 1 },
            "{}",
            table.name()
        );
    }
    assert_eq!(std::fs::read_dir(out.join("queries")).unwrap().count(), 22);
    let lineitem = out.join("lineitem").join("part-0.parquet");
    let before = std::fs::read(&lineitem).unwrap();

    let again = gen_tpch(&[]);
    assert_eq!(again.status.code(), Some(1));
    let refused = text(&again.stderr);
    assert!(
        refused.contains("not empty") && refused.contains("--force"),
        "{refused}"
    );
    assert_eq!(
        std::fs::read(&lineitem).unwrap(),
        before,
        "a refused run writes nothing"
    );

    // A script runs from anywhere: its tables are named by absolute path.
    let submitted = ember()
        .args(["submit", "--master", "local[2]", "--format", "csv"])
        .arg(script(&out, 6))
        .current_dir(work.path())
        .bounded_output()
        .unwrap();
    assert!(submitted.status.success(), "{}", text(&submitted.stderr));
    let expected = reference(&out, 6, scale);
    assert_eq!(expected.rows.len(), 1);
    let csv = text(&submitted.stdout);
    assert!(csv.starts_with("revenue\n"), "{csv}");
    let actual = expected.read_csv(&csv).unwrap();
    assert_eq!(expected.difference(&actual), None, "{csv}");

    let forced = gen_tpch(&["--force"]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert_eq!(
        std::fs::read(&lineitem).unwrap(),
        before,
        "the same data again"
    );
}

/// Spark's autoBroadcastJoinThreshold: a small side (nation, from Parquet
/// statistics) is read whole by every task of the other side; at 0 both
/// sides are shuffled, and the answer is the same.
#[test]
fn the_broadcast_threshold_chooses_between_a_broadcast_and_a_shuffled_join() {
    let dir = data();
    let work = tempfile::tempdir().unwrap();
    let job = work.path().join("join.sql");
    let sql = "SELECT n.n_name, count(*) AS suppliers FROM supplier s \
               JOIN nation n ON s.s_nationkey = n.n_nationkey GROUP BY n.n_name;\n";
    std::fs::write(&job, format!("{}{sql}", tpch::tables_ddl(dir))).unwrap();
    // What `ember submit` prints for the job at this threshold.
    let submit = |threshold: &str, explain: bool| {
        let mut command = ember();
        command.args(["submit", "--master", "local[2]", "--format", "csv"]);
        if explain {
            command.arg("--explain");
        }
        let out = command
            .arg(format!(
                "--conf=ember.sql.autoBroadcastJoinThreshold={threshold}"
            ))
            .arg(&job)
            .bounded_output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let plan = |threshold: &str| {
        let text = submit(threshold, true);
        text.lines()
            .find(|l| l.contains("HashJoinExec"))
            .unwrap_or_else(|| panic!("no join in {text}"))
            .to_string()
    };
    assert!(plan("10m").contains("mode=CollectLeft"), "{}", plan("10m"));
    assert!(plan("0").contains("mode=Partitioned"), "{}", plan("0"));
    let rows = |threshold: &str| {
        let mut lines: Vec<String> = submit(threshold, false)
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    };
    let broadcast = rows("10m");
    assert_eq!(broadcast.len(), 26, "{broadcast:?}");
    assert_eq!(broadcast, rows("0"));
}
