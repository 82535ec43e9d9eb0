//! Streaming queries in micro-batches through `ember submit`: files arriving
//! in a directory land in Parquet exactly once across restarts and a stop
//! between a batch's output and its commit; the rate source feeds a memory
//! table and the console; what streaming cannot do yet is refused.

use ember_testkit::BoundedChild;
use std::path::Path;
use std::process::Command;

use crate::cli::ember;
use crate::support::text;

/// Writes input file `n`: ids `n*100 .. n*100+100`, `v = id % 7`.
fn arrive(dir: &Path, n: u64) {
    let mut csv = String::from("id,v\n");
    for id in n * 100..n * 100 + 100 {
        csv.push_str(&format!("{id},{}\n", id % 7));
    }
    // Written beside, then moved in whole, as a file source expects.
    let tmp = dir.join(format!(".part-{n}.csv"));
    std::fs::write(&tmp, csv).unwrap();
    std::fs::rename(&tmp, dir.join(format!("part-{n:03}.csv"))).unwrap();
    // Files are taken oldest first: keep their times apart.
    std::thread::sleep(std::time::Duration::from_millis(20));
}

/// Makes `work/in/` with one input file of events per batch, in order.
fn events_dir(work: &Path, batches: &[&[(&str, &str)]]) -> std::path::PathBuf {
    let input = work.join("in");
    std::fs::create_dir(&input).unwrap();
    for (n, events) in batches.iter().enumerate() {
        arrive_events(&input, n as u64, events);
    }
    input
}

const SOURCE: &str = "CREATE UNBOUNDED EXTERNAL TABLE events (id BIGINT, v BIGINT) \
                      STORED AS CSV LOCATION 'in/' \
                      OPTIONS ('format.has_header' 'true', 'maxFilesPerTrigger' '1');\n";

/// What the stream's output holds: rows, and the sum of `w`, per the
/// batch engine reading every `batch=N` directory.
fn output_totals(dir: &Path) -> (String, usize) {
    std::fs::write(
        dir.join("check.sql"),
        "CREATE EXTERNAL TABLE out STORED AS PARQUET LOCATION 'out/';\n\
         SELECT count(*) AS n, count(DISTINCT id) AS ids, sum(w) AS w FROM out;\n",
    )
    .unwrap();
    let out = ember(&["submit", "--format", "csv", "check.sql"], dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let batches = std::fs::read_dir(dir.join("out"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("batch=")
        })
        .count();
    (text(&out.stdout), batches)
}

/// The same query over every input file at once, as a batch job.
fn expected_totals(files: u64) -> String {
    let (mut n, mut w) = (0u64, 0u64);
    for id in 0..files * 100 {
        if id % 7 % 3 != 0 {
            n += 1;
            w += (id % 7) * 2;
        }
    }
    format!("n,ids,w\n{n},{n},{w}\n")
}

#[test]
fn files_arriving_land_in_parquet_exactly_once_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::create_dir(work.join("in")).unwrap();
    for n in 0..3 {
        arrive(&work.join("in"), n);
    }
    let job = format!(
        "{SOURCE}START STREAMING QUERY doubled TRIGGER AVAILABLE NOW CHECKPOINT 'ckpt' \
         INTO PARQUET 'out' AS SELECT id, v * 2 AS w FROM events WHERE v % 3 <> 0;\n"
    );
    std::fs::write(work.join("stream.sql"), &job).unwrap();

    // One file a batch: three batches, every row once.
    let out = ember(&["submit", "stream.sql"], work);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(output_totals(work), (expected_totals(3), 3));

    // Run again with nothing new: nothing changes.
    let out = ember(&["submit", "stream.sql"], work);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(output_totals(work), (expected_totals(3), 3));

    // Two more files; the query stops after batch 4's output is written
    // and before its commit is logged.
    arrive(&work.join("in"), 3);
    arrive(&work.join("in"), 4);
    let out = ember(
        &[
            "submit",
            "--conf",
            "ember.faults.streamStopBeforeCommit=4",
            "stream.sql",
        ],
        work,
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("before the commit of batch 4"), "{stderr}");
    // The restart runs batch 4 again with the same file and replaces its
    // output: every row exactly once.
    let out = ember(&["submit", "stream.sql"], work);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(output_totals(work), (expected_totals(5), 5));
    let offsets = std::fs::read_to_string(work.join("ckpt/offsets/4")).unwrap();
    assert!(offsets.contains("part-004.csv"), "{offsets}");

    // A stream is not a table: a batch query on it says what to do.
    std::fs::write(
        work.join("batch.sql"),
        format!("{SOURCE}SELECT count(*) FROM events;\n"),
    )
    .unwrap();
    let out = ember(&["submit", "batch.sql"], work);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("events is a stream") && stderr.contains("START STREAMING QUERY"),
        "{stderr}"
    );

    // A checkpoint is refused to another query.
    let other = job.replace("INTO PARQUET 'out'", "INTO PARQUET 'elsewhere'");
    std::fs::write(work.join("other.sql"), other).unwrap();
    let out = ember(&["submit", "other.sql"], work);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("belongs to another query") && stderr.contains("CHECKPOINT"),
        "{stderr}"
    );
}

#[test]
fn the_rate_source_feeds_a_memory_table_and_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::write(
        work.join("rate.sql"),
        "CREATE UNBOUNDED EXTERNAL TABLE ticks STORED AS RATE LOCATION 'rate:' \
         OPTIONS ('rowsPerSecond' '2000');\n\
         START STREAMING QUERY evens TRIGGER PROCESSING TIME '100 ms' STOP AFTER '800 ms' \
         INTO MEMORY AS SELECT value, timestamp FROM ticks WHERE value % 2 = 0;\n\
         AWAIT STREAMING QUERY evens;\n\
         SELECT count(*) > 100 AS plenty, count(*) = count(DISTINCT value) AS once, \
         min(value) AS first, bool_and(value % 2 = 0) AS even FROM evens;\n\
         START STREAMING QUERY shown TRIGGER PROCESSING TIME '100 ms' STOP AFTER '300 ms' \
         INTO CONSOLE AS SELECT count(*) AS n FROM (SELECT value FROM ticks);\n",
    )
    .unwrap();
    let out = ember(&["submit", "--format", "csv", "rate.sql"], work);
    let stderr = text(&out.stderr);
    // A count written in APPEND mode needs a watermark to know when it
    // is final, as in Spark.
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("OUTPUT MODE APPEND of an aggregation") && stderr.contains("WATERMARK"),
        "{stderr}"
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("plenty,once,first,even\ntrue,true,0,true"),
        "{stdout}"
    );

    std::fs::write(
        work.join("console.sql"),
        "CREATE UNBOUNDED EXTERNAL TABLE ticks STORED AS RATE LOCATION 'rate:' \
         OPTIONS ('rowsPerSecond' '100');\n\
         START STREAMING QUERY shown TRIGGER PROCESSING TIME '100 ms' STOP AFTER '1 second' \
         INTO CONSOLE AS SELECT value FROM ticks WHERE value < 3;\n",
    )
    .unwrap();
    let out = ember(&["submit", "console.sql"], work);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Batch: 0"), "{stdout}");
    for value in ["| 0     |", "| 1     |", "| 2     |"] {
        assert_eq!(stdout.matches(value).count(), 1, "{value} once:\n{stdout}");
    }
}

#[test]
fn a_file_stream_runs_the_same_in_client_mode() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::create_dir(work.join("in")).unwrap();
    for n in 0..4 {
        arrive(&work.join("in"), n);
    }
    let job = format!(
        "{}START STREAMING QUERY doubled TRIGGER AVAILABLE NOW CHECKPOINT '{}' \
         INTO PARQUET '{}' AS SELECT id, v * 2 AS w FROM events WHERE v % 3 <> 0;\n",
        SOURCE.replace("'in/'", &format!("'{}/'", work.join("in").display())),
        work.join("ckpt").display(),
        work.join("out").display()
    );
    let cluster = crate::cluster::Cluster::start();
    let script = cluster.job("stream.sql", &job);
    let out = cluster.run(&[
        "submit",
        "--total-executor-cores",
        "2",
        script.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(output_totals(work), (expected_totals(4), 4));
    // The manager keeps what the driver said of its streaming queries.
    let status = cluster.status();
    let app = status["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"].as_str().unwrap().ends_with("stream.sql"))
        .unwrap_or_else(|| panic!("{status:#}"));
    let query = &app["streams"][0];
    assert_eq!(query["name"], "doubled", "{status:#}");
    assert_eq!(query["state"], "finished", "{status:#}");
    assert_eq!(query["batches"], 4, "{status:#}");
    let shown = text(&cluster.run(&["status", app["id"].as_str().unwrap()]).stdout);
    assert!(
        shown.contains("Streaming queries") && shown.contains("doubled  finished"),
        "{shown}"
    );
}

#[test]
fn a_driver_killed_mid_stream_resumes_with_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().to_path_buf();
    std::fs::create_dir(work.join("in")).unwrap();
    let running = format!(
        "{SOURCE}START STREAMING QUERY doubled STOP AFTER '30 seconds' CHECKPOINT 'ckpt' \
         INTO PARQUET 'out' AS SELECT id, v * 2 AS w FROM events WHERE v % 3 <> 0;\n"
    );
    std::fs::write(work.join("running.sql"), &running).unwrap();
    const FILES: u64 = 24;
    let arriving = {
        let dir = work.join("in");
        std::thread::spawn(move || {
            for n in 0..FILES {
                arrive(&dir, n);
                std::thread::sleep(std::time::Duration::from_millis(30));
            }
        })
    };
    // Killed twice while files arrive and batches run, started again each
    // time on the same checkpoint.
    for wait in [400, 300] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ember"))
            .args(["submit", "running.sql"])
            .current_dir(&work)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(wait));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    arriving.join().unwrap();
    let committed = std::fs::read_dir(work.join("ckpt/commits"))
        .unwrap()
        .count();
    assert!(committed > 0, "no batch committed before the kills");
    // The rest, to the end: every row of every file exactly once.
    let rest = running.replace("STOP AFTER '30 seconds'", "TRIGGER AVAILABLE NOW");
    std::fs::write(work.join("rest.sql"), rest).unwrap();
    let out = ember(&["submit", "rest.sql"], &work);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        output_totals(&work),
        (expected_totals(FILES), FILES as usize)
    );
}

/// A stream that fault tests interrupt: `FILES` input files arrive in
/// `work/in` one every 80 ms while the query (absolute paths, so it runs
/// from any directory) writes Parquet for `stop`.
struct Interrupted {
    work: std::path::PathBuf,
    job: String,
    stop: &'static str,
    /// The thread writing the input files, until it is joined.
    arriving: Option<std::thread::JoinHandle<()>>,
}

const INTERRUPTED_FILES: u64 = 16;

impl Interrupted {
    fn start(work: &Path, stop: &'static str) -> Self {
        Self::start_query(
            work,
            stop,
            "doubled",
            "AS SELECT id, v * 2 AS w FROM events WHERE v % 3 <> 0",
        )
    }

    /// A stream of query `name`, its clauses after the stop, checkpoint and
    /// sink being `rest`.
    fn start_query(work: &Path, stop: &'static str, name: &str, rest: &str) -> Self {
        std::fs::create_dir(work.join("in")).unwrap();
        let job = format!(
            "{}START STREAMING QUERY {name} {stop} CHECKPOINT '{}' \
             INTO PARQUET '{}' {rest};\n",
            SOURCE.replace("'in/'", &format!("'{}/'", work.join("in").display())),
            work.join("ckpt").display(),
            work.join("out").display()
        );
        let dir = work.join("in");
        let arriving = std::thread::spawn(move || {
            for n in 0..INTERRUPTED_FILES {
                arrive(&dir, n);
                std::thread::sleep(std::time::Duration::from_millis(80));
            }
        });
        Self {
            work: work.to_path_buf(),
            job,
            stop,
            arriving: Some(arriving),
        }
    }

    fn commits(&self) -> usize {
        std::fs::read_dir(self.work.join("ckpt/commits")).map_or(0, |d| d.count())
    }

    fn wait_for_commits(&self, n: usize) {
        let began = std::time::Instant::now();
        while self.commits() < n {
            assert!(
                began.elapsed() < std::time::Duration::from_secs(30),
                "no {n} batches committed within 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Once every file arrived, runs the query to the end of the input
    /// (what came after the interrupted runs stopped) and checks the
    /// output holds every row once, one batch a file.
    fn finish(self) {
        let work = self.work.clone();
        self.finish_by(|rest| ember(&["submit", rest.to_str().unwrap()], &work));
    }

    /// [`Interrupted::finish`], the rest run by `run` (given its script).
    fn finish_by(mut self, run: impl FnOnce(&Path) -> std::process::Output) {
        self.run_rest(run);
        assert_eq!(
            output_totals(&self.work),
            (
                expected_totals(INTERRUPTED_FILES),
                INTERRUPTED_FILES as usize
            )
        );
    }

    /// Runs the stream in client mode as application `name` on a loopback
    /// cluster with two one-core executors, and kills one of them once two
    /// batches committed; the run must still succeed.
    fn kill_an_executor_after_two_batches(&self, name: &str) {
        let cluster = crate::cluster::Cluster::start();
        let script = cluster.job(&format!("{name}.sql"), &self.job);
        let submit = cluster
            .ember(&["submit", "--total-executor-cores", "2", "--name", name])
            .arg(&script)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let status = cluster.wait_for("two executors", std::time::Duration::from_secs(20), |s| {
            ember_testkit::app(s, name)
                .is_some_and(|a| a["executors"].as_array().is_some_and(|e| e.len() == 2))
        });
        let (_, executors) = crate::cluster::two_executor_processes(&status, name);
        self.wait_for_commits(2);
        ember_testkit::signal(executors[0], libc::SIGKILL);
        let out = submit.bounded_wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    /// Once every file arrived, runs the query to the end of the input.
    fn run_rest(&mut self, run: impl FnOnce(&Path) -> std::process::Output) {
        if let Some(arriving) = self.arriving.take() {
            arriving.join().unwrap();
        }
        let rest = self.job.replace(self.stop, "TRIGGER AVAILABLE NOW");
        let script = self.work.join("rest.sql");
        std::fs::write(&script, rest).unwrap();
        let out = run(&script);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

/// The rows of the last batch a COMPLETE-mode stream wrote to `work/out`.
fn last_batch_rows(work: &Path, select: &str) -> String {
    let last = std::fs::read_dir(work.join("out"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            name.strip_prefix("batch=")?.parse::<u64>().ok()
        })
        .max()
        .expect("the stream wrote a batch");
    std::fs::write(
        work.join("last.sql"),
        format!(
            "CREATE EXTERNAL TABLE last STORED AS PARQUET LOCATION 'out/batch={last}/';\n{select}\n"
        ),
    )
    .unwrap();
    let out = ember(&["submit", "--format", "csv", "last.sql"], work);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// Aggregation state lives on the executors, one partition per task: one
/// executor killed mid-stream takes the versions it kept in memory, and
/// the tasks that run again elsewhere (and a later run of the query)
/// rebuild them from the checkpoint's snapshots and deltas. The counts
/// come out as one batch job over every file gives them.
#[test]
fn a_stateful_stream_rebuilds_its_state_when_an_executor_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut stream = Interrupted::start_query(
        dir.path(),
        "STOP AFTER '4 seconds'",
        "per_v",
        "OUTPUT MODE COMPLETE AS SELECT v, count(*) AS n, sum(id) AS ids FROM events GROUP BY v",
    );
    stream.kill_an_executor_after_two_batches("stateful-executor-lost");
    let work = dir.path().to_path_buf();
    stream.run_rest(|rest| ember(&["submit", rest.to_str().unwrap()], &work));
    let mut expected = String::from("v,n,ids\n");
    for v in 0..7u64 {
        let ids: Vec<u64> = (0..INTERRUPTED_FILES * 100)
            .filter(|id| id % 7 == v)
            .collect();
        expected.push_str(&format!("{v},{},{}\n", ids.len(), ids.iter().sum::<u64>()));
    }
    assert_eq!(
        last_batch_rows(&work, "SELECT v, n, ids FROM last ORDER BY v;"),
        expected
    );
    // The state's partitions are fixed in the checkpoint, each with its
    // own files.
    let state = work.join("ckpt/state");
    let partitions: usize = std::fs::read_to_string(state.join("partitions"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(partitions, 2, "one state partition per executor core");
    let batches = stream.commits() as u64;
    for p in 0..partitions {
        let kept = [
            format!("{}/part-{p}.snapshot.arrow", batches - 1),
            format!("{}/part-{p}.delta.arrow", batches - 1),
        ];
        assert!(
            kept.iter().any(|f| state.join(f).exists()),
            "partition {p} of the last version is in {}",
            state.display()
        );
    }
}

/// Cluster mode under `--supervise`: the driver is killed outright while
/// files arrive and batches run; the manager relaunches it, it goes on
/// from the checkpoint, and the output holds every row once.
#[test]
fn a_supervised_stream_whose_driver_is_killed_resumes_with_every_row_once() {
    use ember_testkit::{driver, processes, signal};
    let dir = tempfile::tempdir().unwrap();
    let stream = Interrupted::start(dir.path(), "STOP AFTER '5 seconds'");
    let cluster = crate::cluster::Cluster::start();
    let script = cluster.job("supervised.sql", &stream.job);
    let id = cluster.submit_cluster_mode("supervised-stream", &script, true);
    stream.wait_for_commits(2);
    let drivers = processes("driver", &id);
    assert_eq!(drivers.len(), 1, "{drivers:?}");
    signal(drivers[0], libc::SIGKILL);
    let at_kill = stream.commits();
    let status = cluster.wait_for(
        "the relaunched driver to finish",
        std::time::Duration::from_secs(60),
        |s| driver(s, &id).is_some_and(|d| d["state"] == "FINISHED"),
    );
    assert_eq!(driver(&status, &id).unwrap()["restarts"], 1, "{status:#}");
    // The relaunched driver went on with the batches from the checkpoint.
    assert!(
        stream.commits() > at_kill,
        "{} after {at_kill}",
        stream.commits()
    );
    stream.finish();
}

/// Client mode: the driver (`ember submit` against a cluster) is killed
/// outright while files arrive and batches run, and started again on the
/// same checkpoint: its executors go with it, and the output holds every
/// row once.
#[test]
fn a_client_mode_driver_killed_mid_stream_resumes_with_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let stream = Interrupted::start(dir.path(), "STOP AFTER '30 seconds'");
    let cluster = crate::cluster::Cluster::start();
    let script = cluster.job("client-killed.sql", &stream.job);
    let mut submit = cluster
        .ember(&["submit", "--total-executor-cores", "2"])
        .arg(&script)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    stream.wait_for_commits(2);
    ember_testkit::signal(submit.id(), libc::SIGKILL);
    submit.wait().unwrap();
    // Started again in client mode on the same checkpoint.
    stream.finish_by(|rest| {
        cluster.run(&[
            "submit",
            "--total-executor-cores",
            "2",
            rest.to_str().unwrap(),
        ])
    });
}

/// Client mode: an executor is killed while batches run; the job of the
/// batch it was in runs its tasks elsewhere, and the output holds every
/// row once.
#[test]
fn an_executor_killed_mid_stream_loses_no_row_and_doubles_none() {
    let dir = tempfile::tempdir().unwrap();
    let stream = Interrupted::start(dir.path(), "STOP AFTER '4 seconds'");
    stream.kill_an_executor_after_two_batches("executor-lost");
    stream.finish();
}

#[test]
fn ctrl_c_stops_a_running_stream_at_once() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::write(
        work.join("forever.sql"),
        "CREATE UNBOUNDED EXTERNAL TABLE ticks STORED AS RATE LOCATION 'rate:' \
         OPTIONS ('rowsPerSecond' '1000');\n\
         START STREAMING QUERY forever INTO MEMORY AS SELECT value FROM ticks;\n\
         SELECT 'the script went on' AS next;\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["submit", "--format", "csv", "forever.sql"])
        .current_dir(work)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The query runs in the background: the next statement runs at once,
    // and the script then waits for the query, which never ends by itself.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    while !printed.contains("went on") {
        assert_ne!(stdout.read_line(&mut printed).unwrap(), 0, "{printed}");
    }
    ember_testkit::signal(child.id(), libc::SIGINT);
    let asked = std::time::Instant::now();
    let out = child.bounded_wait_with_output().unwrap();
    // Between batches the query stops at once; the 5 s a job gets to end
    // after Ctrl-C is not waited out.
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(out.status.code(), Some(130));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("interrupted"), "{stderr}");
}

/// A file source's batches report the rows they read, as Spark's
/// `numInputRows`: CSV records (a quoted field may span lines; the header
/// and blank lines are not rows), JSON lines, Parquet rows.
#[test]
fn file_sources_report_the_rows_each_batch_read() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    for sub in ["csv", "json", "pq", "staging"] {
        std::fs::create_dir(work.join(sub)).unwrap();
    }
    std::fs::write(
        work.join("csv/a.csv"),
        "id,note\n1,\"two\nlines\"\n2,plain\n\n3,\"say \"\"hi\"\"\"\n",
    )
    .unwrap();
    std::fs::write(work.join("csv/b.csv"), "id,note\n4,x").unwrap();
    std::fs::write(work.join("json/a.json"), "{\"v\":1}\n\n{\"v\":2}\n").unwrap();
    std::fs::write(
        work.join("staging.sql"),
        "COPY (SELECT * FROM (VALUES (1), (2), (3), (4), (5)) AS t(v)) \
         TO 'staging/x.parquet' STORED AS PARQUET;\n",
    )
    .unwrap();
    let out = ember(&["submit", "staging.sql"], work);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::rename(work.join("staging/x.parquet"), work.join("pq/x.parquet")).unwrap();
    std::fs::write(
        work.join("count.sql"),
        "CREATE UNBOUNDED EXTERNAL TABLE c (id INT, note VARCHAR) STORED AS CSV \
         LOCATION 'csv/' OPTIONS ('format.has_header' 'true');\n\
         CREATE UNBOUNDED EXTERNAL TABLE j (v BIGINT) STORED AS JSON LOCATION 'json/';\n\
         CREATE UNBOUNDED EXTERNAL TABLE p (v BIGINT) STORED AS PARQUET LOCATION 'pq/';\n\
         START STREAMING QUERY cs TRIGGER AVAILABLE NOW INTO MEMORY AS SELECT * FROM c;\n\
         START STREAMING QUERY js TRIGGER AVAILABLE NOW INTO MEMORY AS SELECT * FROM j;\n\
         START STREAMING QUERY ps TRIGGER AVAILABLE NOW INTO MEMORY AS SELECT * FROM p;\n\
         AWAIT STREAMING QUERY cs;\n\
         AWAIT STREAMING QUERY js;\n\
         AWAIT STREAMING QUERY ps;\n\
         SELECT (SELECT count(*) FROM cs) AS c, (SELECT count(*) FROM js) AS j, \
         (SELECT count(*) FROM ps) AS p;\n\
         SHOW STREAMING QUERIES;\n",
    )
    .unwrap();
    let out = ember(&["submit", "--format", "csv", "count.sql"], work);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // What each query wrote, and what its batches say they read: the same.
    assert!(stdout.starts_with("c,j,p\n4,2,5\n"), "{stdout}");
    assert!(stdout.contains("\ncs,finished,memory,1,4,"), "{stdout}");
    assert!(stdout.contains("\njs,finished,memory,1,2,"), "{stdout}");
    assert!(stdout.contains("\nps,finished,memory,1,5,"), "{stdout}");
}

#[test]
fn background_queries_are_listed_stopped_and_awaited() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::write(
        work.join("control.sql"),
        "CREATE UNBOUNDED EXTERNAL TABLE ticks STORED AS RATE LOCATION 'rate:' \
         OPTIONS ('rowsPerSecond' '1000');\n\
         START STREAMING QUERY ticking TRIGGER PROCESSING TIME '50 ms' INTO MEMORY \
         AS SELECT value FROM ticks;\n\
         AWAIT STREAMING QUERY ticking TIMEOUT '400 ms';\n\
         SELECT count(*) > 0 AS filling, count(*) = count(DISTINCT value) AS once FROM ticking;\n\
         SELECT 'listed' AS at;\n\
         SHOW STREAMING QUERIES;\n\
         STOP STREAMING QUERY ticking;\n\
         SELECT 'stopped' AS at;\n\
         SHOW STREAMING QUERIES;\n\
         AWAIT STREAMING QUERY ticking;\n\
         SELECT count(*) AS kept FROM ticking;\n",
    )
    .unwrap();
    let out = ember(&["submit", "--format", "csv", "control.sql"], work);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("filling,once\ntrue,true\n"), "{stdout}");
    let (running, stopped) = stdout.split_once("at\nstopped\n").unwrap();
    let header = "name,state,sink,batches,input_rows,last_batch";
    assert!(running.contains(header), "{stdout}");
    assert!(running.contains("\nticking,running,memory,"), "{stdout}");
    assert!(stopped.contains("\nticking,stopped,memory,"), "{stdout}");
    // The memory table stays after its query stopped.
    assert!(stdout.contains("kept\n"), "{stdout}");

    // A query that fails fails the statement that started it, once the
    // script's other statements ran; another name is not a query.
    std::fs::write(
        work.join("failing.sql"),
        "CREATE UNBOUNDED EXTERNAL TABLE ticks STORED AS RATE LOCATION 'rate:' \
         OPTIONS ('rowsPerSecond' '1000');\n\
         START STREAMING QUERY broken INTO MEMORY AS SELECT value / (value - value) AS x \
         FROM ticks;\n\
         SELECT 'went on' AS next;\n",
    )
    .unwrap();
    let out = ember(&["submit", "--format", "csv", "failing.sql"], work);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(text(&out.stdout), "next\nwent on\n");
    assert!(
        stderr.contains("statement 2 (START STREAMING QUERY broken")
            && stderr.contains("streaming query broken failed")
            && stderr.contains("Divide by zero"),
        "{stderr}"
    );
    std::fs::write(work.join("stop.sql"), "STOP STREAMING QUERY nothing;\n").unwrap();
    let out = ember(&["submit", "stop.sql"], work);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no streaming query named nothing"),
        "{stderr}"
    );
}

#[test]
fn json_lines_arriving_land_in_csv_files() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::create_dir(work.join("in")).unwrap();
    for n in 0..3u64 {
        let lines: String = (n * 10..n * 10 + 10)
            .map(|id| format!("{{\"id\":{id},\"name\":\"user {id}\"}}\n"))
            .collect();
        std::fs::write(work.join(format!("in/.{n}")), lines).unwrap();
        std::fs::rename(
            work.join(format!("in/.{n}")),
            work.join(format!("in/{n}.json")),
        )
        .unwrap();
    }
    std::fs::write(
        work.join("json.sql"),
        "CREATE UNBOUNDED EXTERNAL TABLE people (id BIGINT, name VARCHAR) STORED AS JSON \
         LOCATION 'in/';\n\
         START STREAMING QUERY named TRIGGER ONCE CHECKPOINT 'ckpt' INTO CSV 'out' \
         AS SELECT id, upper(name) AS name FROM people WHERE id % 2 = 0;\n\
         AWAIT STREAMING QUERY named;\n\
         CREATE EXTERNAL TABLE written (id BIGINT, name VARCHAR) STORED AS CSV LOCATION 'out/' \
         OPTIONS ('format.has_header' 'true');\n\
         SELECT count(*) AS n, min(name) AS first FROM written;\n",
    )
    .unwrap();
    let out = ember(&["submit", "--format", "csv", "json.sql"], work);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // ONCE takes every file there in one batch.
    assert_eq!(text(&out.stdout), "n,first\n15,USER 0\n");
    assert!(work.join("out/batch=0/_SUCCESS").exists());
    assert!(!work.join("out/batch=1").exists());
}

/// Writes input file `n` of events `(ts, k)` at these times on 2024-01-01.
fn arrive_events(dir: &Path, n: u64, events: &[(&str, &str)]) {
    let mut csv = String::from("ts,k\n");
    for (at, k) in events {
        csv.push_str(&format!("2024-01-01T{at},{k}\n"));
    }
    let tmp = dir.join(format!(".e-{n}"));
    std::fs::write(&tmp, csv).unwrap();
    std::fs::rename(&tmp, dir.join(format!("e-{n:03}.csv"))).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
}

#[test]
fn a_windowed_count_with_a_watermark_writes_each_final_window_once_and_drops_late_rows() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let input = events_dir(
        work,
        &[
            &[("00:00:10", "a"), ("00:00:20", "a"), ("00:00:50", "b")],
            // 00:00:30 is late: the watermark is 00:00:40 by then.
            &[("00:01:05", "a"), ("00:00:45", "b"), ("00:00:30", "a")],
            &[("00:02:30", "a"), ("00:00:58", "b"), ("00:01:10", "b")],
            &[("00:03:30", "a")],
        ],
    );
    let job = "CREATE UNBOUNDED EXTERNAL TABLE events (ts TIMESTAMP, k VARCHAR) STORED AS CSV \
               LOCATION 'in/' OPTIONS ('format.has_header' 'true', 'maxFilesPerTrigger' '1');\n\
               START STREAMING QUERY per_minute TRIGGER AVAILABLE NOW CHECKPOINT 'ckpt' \
               WATERMARK ts DELAY '10 seconds' OUTPUT MODE APPEND INTO PARQUET 'out' \
               AS SELECT date_bin(INTERVAL '1 minute', ts) AS window_start, k, count(*) AS n \
               FROM events GROUP BY date_bin(INTERVAL '1 minute', ts), k;\n";
    std::fs::write(work.join("windows.sql"), job).unwrap();
    let windows = |work: &Path| {
        std::fs::write(
            work.join("read.sql"),
            "CREATE EXTERNAL TABLE out STORED AS PARQUET LOCATION 'out/';\n\
             SELECT window_start, k, n FROM out ORDER BY window_start, k;\n",
        )
        .unwrap();
        let out = ember(&["submit", "--format", "csv", "read.sql"], work);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let out = ember(&["submit", "windows.sql"], work);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Batch 3 ran with the watermark 02:20 (02:30 less 10 s): the windows
    // of minutes 0 and 1 are final, and written once; later ones wait.
    assert_eq!(
        windows(work),
        "window_start,k,n\n\
         2024-01-01T00:00:00,a,2\n\
         2024-01-01T00:00:00,b,3\n\
         2024-01-01T00:01:00,a,1\n\
         2024-01-01T00:01:00,b,1\n"
    );
    // The checkpoint keeps each batch's progress: batch 3 ran with the
    // watermark 00:02:20 and kept the windows of minutes 2 and 3.
    let progress = std::fs::read_to_string(work.join("ckpt/progress")).unwrap();
    let last: serde_json::Value = serde_json::from_str(progress.lines().last().unwrap()).unwrap();
    assert_eq!(progress.lines().count(), 4, "{progress}");
    assert_eq!(last["batch"], 3);
    assert_eq!(last["watermark_micros"], 1_704_067_340_000_000i64);
    assert_eq!(last["state_rows"], 2);
    assert_eq!(last["input_files"], 1);
    // A restart takes the state and watermark from the checkpoint: a row
    // for minute 1 is now late, and minute 2's window becomes final.
    arrive_events(&input, 4, &[("00:05:00", "a"), ("00:01:30", "b")]);
    let out = ember(&["submit", "windows.sql"], work);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        windows(work),
        "window_start,k,n\n\
         2024-01-01T00:00:00,a,2\n\
         2024-01-01T00:00:00,b,3\n\
         2024-01-01T00:01:00,a,1\n\
         2024-01-01T00:01:00,b,1\n\
         2024-01-01T00:02:00,a,1\n"
    );
}

#[test]
fn complete_and_update_modes_keep_counts_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::create_dir(work.join("in")).unwrap();
    for n in 0..3 {
        arrive(&work.join("in"), n);
    }
    std::fs::write(
        work.join("counts.sql"),
        format!(
            "{SOURCE}START STREAMING QUERY totals TRIGGER AVAILABLE NOW OUTPUT MODE COMPLETE \
             INTO MEMORY AS SELECT v, count(*) AS n, sum(id) AS ids, min(id) AS first FROM events \
             GROUP BY v;\n\
             START STREAMING QUERY changes TRIGGER AVAILABLE NOW OUTPUT MODE UPDATE \
             INTO MEMORY AS SELECT v, id % 2 AS odd, count(*) AS n FROM events WHERE id < 150 \
             GROUP BY v, id % 2;\n\
             AWAIT STREAMING QUERY totals;\n\
             AWAIT STREAMING QUERY changes;\n\
             CREATE EXTERNAL TABLE everything (id BIGINT, v BIGINT) STORED AS CSV LOCATION 'in/' \
             OPTIONS ('format.has_header' 'true');\n\
             SELECT count(*) AS groups, bool_and(t.n = e.n AND t.ids = e.ids AND t.first = e.first) \
             AS same FROM totals t JOIN (SELECT v, count(*) AS n, sum(id) AS ids, min(id) AS first \
             FROM everything GROUP BY v) e ON t.v = e.v;\n\
             SELECT count(*) AS updates, sum(n) AS last_n FROM changes;\n"
        ),
    )
    .unwrap();
    let out = ember(&["submit", "--format", "csv", "counts.sql"], work);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // COMPLETE: after the last batch, every group, equal to one batch job
    // over all the input.
    // UPDATE: batch 0 changed all 14 groups (ids 0-99), batch 1 all 14
    // again (ids 100-149), batch 2 none: 28 rows, the second 14 with all
    // 150 ids.
    assert_eq!(
        text(&out.stdout),
        "groups,same\n7,true\nupdates,last_n\n28,250\n"
    );
}

#[test]
fn select_distinct_over_a_stream_writes_each_row_the_first_time_only() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    events_dir(
        work,
        &[
            &[("00:00:10", "a"), ("00:00:10", "a"), ("00:00:20", "b")],
            // The same events again, and a new one.
            &[("00:00:10", "a"), ("00:00:20", "b"), ("00:00:30", "c")],
            &[("00:00:30", "c"), ("00:00:40", "a")],
        ],
    );
    std::fs::write(
        work.join("distinct.sql"),
        "CREATE UNBOUNDED EXTERNAL TABLE events (ts TIMESTAMP, k VARCHAR) STORED AS CSV \
         LOCATION 'in/' OPTIONS ('format.has_header' 'true', 'maxFilesPerTrigger' '1');\n\
         START STREAMING QUERY firsts TRIGGER AVAILABLE NOW CHECKPOINT 'ckpt' \
         WATERMARK ts DELAY '1 minute' INTO CSV 'out' AS SELECT DISTINCT ts, k FROM events;\n\
         AWAIT STREAMING QUERY firsts;\n\
         CREATE EXTERNAL TABLE out (ts TIMESTAMP, k VARCHAR) STORED AS CSV LOCATION 'out/' \
         OPTIONS ('format.has_header' 'true');\n\
         SELECT ts, k FROM out ORDER BY ts, k;\n",
    )
    .unwrap();
    let out = ember(&["submit", "--format", "csv", "distinct.sql"], work);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "ts,k\n\
         2024-01-01T00:00:10,a\n\
         2024-01-01T00:00:20,b\n\
         2024-01-01T00:00:30,c\n\
         2024-01-01T00:00:40,a\n"
    );
}

#[actix::test]
async fn foreach_batch_hands_each_batch_to_the_application() {
    use ember_session::streaming::{OutputMode, Sink, StreamingQuery, Trigger};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    for n in 0..3 {
        arrive(&input, n);
    }
    let mut session = crate::support::bare_session("local[2]").await;
    session
        .execute(&SOURCE.replace("'in/'", &format!("'{}/'", input.display())))
        .await
        .unwrap();
    let query = StreamingQuery {
        name: "handed".into(),
        trigger: Trigger::AvailableNow,
        checkpoint: None,
        output_mode: OutputMode::Append,
        sink: Sink::ForeachBatch,
        stop_after: None,
        watermark: None,
        sql: "SELECT id FROM events WHERE v = 0".into(),
    };
    let seen: Arc<Mutex<Vec<(u64, usize)>>> = Arc::default();
    let taken = Arc::clone(&seen);
    let progress = session
        .run_streaming_query_with(
            &query,
            Box::new(move |batch, rows| {
                let n = rows.iter().map(|b| b.num_rows()).sum();
                taken.lock().unwrap().push((batch, n));
                Ok(())
            }),
        )
        .await
        .unwrap();
    // One file a batch; ids with v = 0 are the multiples of 7.
    let expected: Vec<(u64, usize)> = (0..3u64)
        .map(|n| (n, (n * 100..n * 100 + 100).filter(|id| id % 7 == 0).count()))
        .collect();
    assert_eq!(*seen.lock().unwrap(), expected);
    assert_eq!(progress.len(), 3);
    session.stop().await;
}

#[test]
fn lines_from_a_socket_reach_a_memory_table_each_once() {
    use std::io::Write;
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = server.local_addr().unwrap();
    let talking = std::thread::spawn(move || {
        let (mut peer, _) = server.accept().unwrap();
        for word in ["alpha", "beta", "gamma"] {
            writeln!(peer, "{word}").unwrap();
        }
        peer.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        for word in ["delta", "epsilon"] {
            writeln!(peer, "{word}").unwrap();
        }
        peer.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
    });
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::write(
        work.join("socket.sql"),
        format!(
            "CREATE UNBOUNDED EXTERNAL TABLE words STORED AS SOCKET LOCATION '{address}';\n\
             START STREAMING QUERY heard TRIGGER PROCESSING TIME '100 ms' STOP AFTER '1 second' \
             INTO MEMORY AS SELECT upper(value) AS word FROM words;\n\
             AWAIT STREAMING QUERY heard;\n\
             SELECT count(*) AS n, count(DISTINCT word) AS words, min(word) AS first FROM heard;\n"
        ),
    )
    .unwrap();
    let out = ember(&["submit", "--format", "csv", "socket.sql"], work);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "n,words,first\n5,5,ALPHA\n");
    talking.join().unwrap();
}

#[test]
fn a_kafka_topic_an_independent_producer_fills_lands_in_parquet_once_and_routes_to_kafka() {
    let broker = ember_testkit::kafka::Broker::start(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        ember_testkit::kafka::Build::Tests,
    );
    broker.create_topic("news", 2);
    broker.create_topic("sport", 2);
    let story = |id: u64| {
        let section = if id.is_multiple_of(3) {
            "sport"
        } else {
            "tech"
        };
        (
            format!("k{id}"),
            format!("{{\"id\":{id},\"title\":\"story {id}\",\"section\":\"{section}\"}}"),
        )
    };
    // Three producers one after another: each partition holds several
    // record batches, so a trigger's 50 offsets a partition end inside
    // one, and the next trigger starts there.
    for part in 0..3 {
        broker.produce(
            "news",
            &(part * 100..part * 100 + 100)
                .map(story)
                .collect::<Vec<_>>(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let address = broker.address();
    std::fs::write(
        work.join("kafka.sql"),
        format!(
            "CREATE UNBOUNDED EXTERNAL TABLE news (id BIGINT, title VARCHAR, section VARCHAR) \
             STORED AS KAFKA LOCATION '{address}' OPTIONS ('subscribe' 'news', \
             'startingOffsets' 'earliest', 'valueFormat' 'json', 'maxOffsetsPerTrigger' '100');\n\
             START STREAMING QUERY stories TRIGGER AVAILABLE NOW CHECKPOINT 'ckpt' \
             INTO PARQUET 'out' AS SELECT id, upper(title) AS title FROM news;\n\
             CREATE UNBOUNDED EXTERNAL TABLE raw STORED AS KAFKA LOCATION '{address}' \
             OPTIONS ('subscribe' 'news', 'startingOffsets' 'earliest');\n\
             START STREAMING QUERY route TRIGGER AVAILABLE NOW CHECKPOINT 'routed' \
             INTO KAFKA '{address}' TOPIC 'sport' AS SELECT key, value FROM raw \
             WHERE CAST(value AS VARCHAR) LIKE '%\"sport\"%';\n"
        ),
    )
    .unwrap();
    let read = |work: &Path| {
        std::fs::write(
            work.join("read.sql"),
            "CREATE EXTERNAL TABLE out STORED AS PARQUET LOCATION 'out/';\n\
             SELECT count(*) AS n, count(DISTINCT id) AS ids, sum(id) AS total, \
             min(title) AS first FROM out;\n",
        )
        .unwrap();
        let out = ember(&["submit", "--format", "csv", "read.sql"], work);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let out = ember(&["submit", "kafka.sql"], work);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(read(work), "n,ids,total,first\n300,300,44850,STORY 0\n");
    // At most 100 records a batch: at least three batches, each with its
    // offset ranges written ahead.
    let batches = std::fs::read_dir(work.join("ckpt/offsets"))
        .unwrap()
        .count();
    assert!(batches >= 3, "{batches} batches");

    // More records; a restart reads only those, each once.
    broker.produce("news", &(300..360).map(story).collect::<Vec<_>>());
    let out = ember(&["submit", "kafka.sql"], work);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(read(work), "n,ids,total,first\n360,360,64620,STORY 0\n");

    // The sink: every sport story, read back by an independent consumer,
    // each with the batch that wrote it in a header.
    let routed = broker.consume("sport");
    let mut ids: Vec<u64> = routed
        .iter()
        .map(|r| {
            let value: serde_json::Value =
                serde_json::from_str(r["value"].as_str().unwrap()).unwrap();
            assert!(r["headers"]["ember.batch"].is_string(), "{r}");
            assert_eq!(r["key"], format!("k{}", value["id"]), "{r}");
            value["id"].as_u64().unwrap()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..360u64)
            .filter(|id| id.is_multiple_of(3))
            .collect::<Vec<_>>()
    );

    // A topic the broker does not have is named in the error.
    std::fs::write(
        work.join("missing.sql"),
        format!(
            "CREATE UNBOUNDED EXTERNAL TABLE gone STORED AS KAFKA LOCATION '{address}' \
             OPTIONS ('subscribe' 'nowhere');\n\
             START STREAMING QUERY lost TRIGGER ONCE INTO CONSOLE AS SELECT * FROM gone;\n"
        ),
    )
    .unwrap();
    let out = ember(&["submit", "missing.sql"], work);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no topic 'nowhere'") && stderr.contains("news"),
        "{stderr}"
    );
}

/// The seed's news feed: stories arriving as files, joined with a static
/// table of users' interests, each story routed to every interested user.
#[test]
fn a_stream_joined_with_a_static_table_routes_each_story_to_its_readers() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::create_dir(work.join("in")).unwrap();
    std::fs::write(
        work.join("interests.csv"),
        "user,section\nada,sport\nada,tech\nbob,tech\ncyd,arts\n",
    )
    .unwrap();
    for n in 0..3u64 {
        let mut csv = String::from("id,section\n");
        for id in n * 10..n * 10 + 10 {
            let section = ["sport", "tech", "news"][(id % 3) as usize];
            csv.push_str(&format!("{id},{section}\n"));
        }
        std::fs::write(work.join(format!("in/.{n}")), csv).unwrap();
        std::fs::rename(
            work.join(format!("in/.{n}")),
            work.join(format!("in/{n}.csv")),
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::write(
        work.join("route.sql"),
        "CREATE EXTERNAL TABLE interests (user VARCHAR, section VARCHAR) STORED AS CSV \
         LOCATION 'interests.csv' OPTIONS ('format.has_header' 'true');\n\
         CREATE UNBOUNDED EXTERNAL TABLE stories (id BIGINT, section VARCHAR) STORED AS CSV \
         LOCATION 'in/' OPTIONS ('format.has_header' 'true', 'maxFilesPerTrigger' '1');\n\
         START STREAMING QUERY routed TRIGGER AVAILABLE NOW INTO MEMORY AS \
         SELECT s.id, i.user FROM stories s JOIN interests i ON s.section = i.section;\n\
         AWAIT STREAMING QUERY routed;\n\
         SELECT user, count(*) AS stories, sum(id) AS ids FROM routed GROUP BY user ORDER BY user;\n\
         SHOW STREAMING QUERIES;\n",
    )
    .unwrap();
    let out = ember(&["submit", "--format", "csv", "route.sql"], work);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // ids 0..30: sport is id % 3 = 0 (10 stories, ids sum 135), tech
    // id % 3 = 1 (10, 145); nobody reads news, cyd's arts never comes.
    assert!(
        stdout.starts_with("user,stories,ids\nada,20,280\nbob,10,145\n"),
        "{stdout}"
    );
    // One file a batch.
    assert!(stdout.contains("\nrouted,finished,memory,3,"), "{stdout}");
}

/// Session windows (`session_window`, Spark's `session_window(ts, gap)`):
/// a key's events less than the gap apart make one session, within a
/// batch and across batches; a late row is dropped; a session is written
/// once, when the watermark passed its end (its last event plus the gap);
/// the open sessions survive a restart through the checkpoint.
#[test]
fn session_windows_merge_across_batches_and_are_written_once_final() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    // Gap 30 s, watermark delay 10 s.
    let input = events_dir(
        work,
        &[
            // Batch 0: a's 00:00 and 00:20 are one session (to 00:50); b's
            // 00:05.
            &[("00:00:00", "a"), ("00:00:20", "a"), ("00:00:05", "b")],
            // Batch 1 (watermark 00:00:10): a's 00:45 extends a's session
            // to 01:15; b's 00:01 is late.
            &[("00:00:45", "a"), ("00:00:01", "b"), ("00:01:00", "c")],
            // Batch 2 (watermark 00:00:50): b's first session (ended 00:35)
            // is final; a's 02:00 and b's 01:10 start new sessions.
            &[("00:02:00", "a"), ("00:01:10", "b")],
            // Batch 3 (watermark 00:01:50): a's first, c's and b's second
            // are final.
            &[("00:05:00", "z")],
        ],
    );
    let script = "CREATE UNBOUNDED EXTERNAL TABLE events (ts TIMESTAMP, k VARCHAR) STORED AS CSV \
         LOCATION 'in/' OPTIONS ('format.has_header' 'true', 'maxFilesPerTrigger' '1');\n\
         START STREAMING QUERY sessions TRIGGER AVAILABLE NOW CHECKPOINT 'ckpt' \
         WATERMARK ts DELAY '10 seconds' OUTPUT MODE APPEND INTO MEMORY \
         AS SELECT session_window(ts, INTERVAL '30 seconds') AS session_start, k, \
         count(*) AS n, max(ts) AS last_event FROM events GROUP BY 1, 2;\n\
         AWAIT STREAMING QUERY sessions;\n\
         SELECT * FROM sessions ORDER BY session_start, k;\n";
    std::fs::write(work.join("sessions.sql"), script).unwrap();
    let out = ember(&["submit", "--format", "csv", "sessions.sql"], work);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "session_start,k,n,last_event\n\
         2024-01-01T00:00:00,a,3,2024-01-01T00:00:45\n\
         2024-01-01T00:00:05,b,1,2024-01-01T00:00:05\n\
         2024-01-01T00:01:00,c,1,2024-01-01T00:01:00\n\
         2024-01-01T00:01:10,b,1,2024-01-01T00:01:10\n"
    );
    // Started again with one more file: a's open session (from 02:00) came
    // back from the checkpoint, and the watermark (04:50) makes it final.
    arrive_events(&input, 4, &[("00:05:10", "y")]);
    let out = ember(&["submit", "--format", "csv", "sessions.sql"], work);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "session_start,k,n,last_event\n2024-01-01T00:02:00,a,1,2024-01-01T00:02:00\n"
    );
    // Append without a watermark on the session's column is refused.
    std::fs::write(
        work.join("bad.sql"),
        script
            .replace("WATERMARK ts DELAY '10 seconds' ", "")
            .replace("'ckpt'", "'ckpt2'"),
    )
    .unwrap();
    let out = ember(&["submit", "bad.sql"], work);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("needs a WATERMARK on the session_window's time column"),
        "{stderr}"
    );
}

/// Sliding windows (`sliding_window`, Spark's `window(ts, size, slide)`):
/// each row counts in every window that holds it; a late row is dropped
/// from all of them; a window is written once, when the watermark passed
/// its end.
#[test]
fn sliding_windows_count_each_row_in_every_window_that_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    events_dir(
        work,
        &[
            &[("00:00:10", "a"), ("00:00:40", "a"), ("00:00:50", "b")],
            // 00:00:05 is late: the watermark is 00:00:40 by then.
            &[("00:01:20", "a"), ("00:00:05", "b"), ("00:02:30", "a")],
            &[("00:04:00", "a")],
        ],
    );
    std::fs::write(
        work.join("sliding.sql"),
        "CREATE UNBOUNDED EXTERNAL TABLE events (ts TIMESTAMP, k VARCHAR) STORED AS CSV \
         LOCATION 'in/' OPTIONS ('format.has_header' 'true', 'maxFilesPerTrigger' '1');\n\
         START STREAMING QUERY sliding TRIGGER AVAILABLE NOW CHECKPOINT 'ckpt' \
         WATERMARK ts DELAY '10 seconds' OUTPUT MODE APPEND INTO MEMORY \
         AS SELECT window_start, k, count(*) AS n FROM (SELECT unnest(sliding_window(ts, \
         INTERVAL '1 minute', INTERVAL '30 seconds')) AS window_start, k FROM events) \
         GROUP BY window_start, k;\n\
         AWAIT STREAMING QUERY sliding;\n\
         SELECT * FROM sliding ORDER BY window_start, k;\n",
    )
    .unwrap();
    let out = ember(&["submit", "--format", "csv", "sliding.sql"], work);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Batch 2 ran with the watermark 00:02:20: windows starting at 00:01:20
    // or before are final. The one starting at 23:59:30 was final in
    // batch 1 (watermark 00:00:40).
    assert_eq!(
        text(&out.stdout),
        "window_start,k,n\n\
         2023-12-31T23:59:30,a,1\n\
         2024-01-01T00:00:00,a,2\n\
         2024-01-01T00:00:00,b,1\n\
         2024-01-01T00:00:30,a,2\n\
         2024-01-01T00:00:30,b,1\n\
         2024-01-01T00:01:00,a,1\n"
    );
    // A slide longer than the window is refused with what to write.
    std::fs::write(
        work.join("bad.sql"),
        "SELECT unnest(sliding_window(TIMESTAMP '2024-01-01T00:00:00', INTERVAL '1 minute', \
         INTERVAL '2 minutes'));\n",
    )
    .unwrap();
    let out = ember(&["submit", "bad.sql"], work);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("at most the size"), "{stderr}");
}
