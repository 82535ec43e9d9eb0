//! Clusters of real processes on loopback: a cluster manager, two workers
//! (each running its executors and drivers as child processes) and `ember`
//! commands as a user runs them. Executor processes are found by PID, from
//! /proc, so "no executor left behind" is checked against the OS itself.

use ember_testkit::{BoundedChild, BoundedCommand};
use std::io::Read;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ember_testkit::{self as loopback, LoopbackCluster, driver, processes, signal, wait_gone};
use serde_json::Value;

use crate::support::text;

/// Clusters run one at a time: two would fight over the two cores.
pub static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn ember() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ember"))
}

/// A job long enough to be interrupted: one task scanning billions of
/// generated rows.
const LONG_JOB: &str =
    "SELECT count(*) AS n FROM generate_series(1, 50000000000) AS t(v) WHERE v % 7 = 3;\n";

/// A manager and two one-core workers, with commands run from the
/// repository (where `examples/` is).
pub struct Cluster {
    inner: LoopbackCluster,
    _turn: MutexGuard<'static, ()>,
}

impl Deref for Cluster {
    type Target = LoopbackCluster;
    fn deref(&self) -> &LoopbackCluster {
        &self.inner
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut LoopbackCluster {
        &mut self.inner
    }
}

impl Cluster {
    pub fn start() -> Self {
        Self::start_sized(1)
    }

    /// Two one-core workers, and these settings on the manager.
    pub fn start_with(manager_conf: &[&str]) -> Self {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let inner = LoopbackCluster::start(ember(), 2, manager_conf);
        Cluster { inner, _turn: turn }
    }

    /// Two workers of `cores` cores each.
    pub fn start_sized(cores: u32) -> Self {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let inner =
            LoopbackCluster::start_sized(ember(), 2, cores, &["ember.deploy.recoveryTimeout=2s"]);
        Cluster { inner, _turn: turn }
    }

    /// An `ember` command with this cluster's master and certificates.
    pub fn ember(&self, args: &[&str]) -> Command {
        let mut command = self.inner.ember(args);
        command.current_dir(env!("CARGO_MANIFEST_DIR"));
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.ember(args).bounded_output().unwrap()
    }

    pub fn status(&self) -> Value {
        self.inner.status().expect("the cluster manager answers")
    }

    /// Submits `job` in cluster mode and returns its submission id.
    pub fn submit_cluster_mode(&self, name: &str, job: &Path, supervise: bool) -> String {
        let mut command = self.ember(&["submit", "--deploy-mode", "cluster", "--name", name]);
        if supervise {
            command.arg("--supervise");
        }
        let out = command.arg(job).bounded_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let id = text(&out.stdout).trim().to_string();
        assert!(id.starts_with("driver-"), "{id}");
        id
    }

    /// Writes a job file in the cluster's directory.
    pub fn job(&self, name: &str, sql: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, sql).unwrap();
        path
    }
}

fn watch_time_local() -> String {
    crate::support::local_rows(Path::new("examples/watch_time.sql"))
}

#[test]
fn client_and_cluster_mode_give_the_same_rows_as_local_mode() {
    let expected = watch_time_local();
    let cluster = Cluster::start();

    let out = cluster.run(&[
        "submit",
        "--format",
        "csv",
        "--total-executor-cores",
        "2",
        "--name",
        "client-mode",
        "examples/watch_time.sql",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), expected);
    // Counting rows reads no column: batches of zero columns keep their
    // row counts across the plan codec. A literal an outer join pads with
    // NULLs is sorted, its guard node crossing the codec too.
    let count = cluster.job(
        "count.sql",
        "SELECT count(*) AS n FROM generate_series(1, 3000);\n\
         SELECT d.tag, r.y FROM (SELECT 'x' AS tag FROM (VALUES (1),(2)) t(a)) d \
         FULL JOIN (VALUES (1),(2),(3)) r(y) ON r.y = 2 ORDER BY d.tag NULLS FIRST, r.y;\n",
    );
    let out = cluster.run(&["submit", "--format", "csv", count.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "n\n3000\ntag,y\nNULL,1\nNULL,3\nx,2\nx,2\n"
    );
    let status = cluster.wait_for(
        "the client-mode app to finish",
        Duration::from_secs(10),
        |s| loopback::app(s, "client-mode").is_some_and(|a| a["state"] == "FINISHED"),
    );
    let app = loopback::app(&status, "client-mode").unwrap();
    let id = app["id"].as_str().unwrap();
    assert!(
        wait_gone(&processes("executor", id), Duration::from_secs(10)).is_some(),
        "executors of a finished application must exit"
    );
    // Finished, it still shows what ran where.
    let had = app["removed_executors"].as_array().unwrap();
    assert_eq!(had.len(), 2, "{app:#}");
    for e in had {
        assert!(e["worker"] == "w1" || e["worker"] == "w2", "{e:#}");
        assert_eq!(e["state"], "KILLED", "{e:#}");
    }

    let out = cluster.run(&[
        "submit",
        "--deploy-mode",
        "cluster",
        "--name",
        "cluster-mode",
        "examples/watch_time.sql",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    cluster.wait_for(
        "the cluster-mode driver to finish",
        Duration::from_secs(30),
        |s| driver(s, &id).is_some_and(|d| d["state"] == "FINISHED"),
    );
    let logs = cluster.run(&["logs", &id]);
    assert!(logs.status.success(), "{}", text(&logs.stderr));
    assert_eq!(text(&logs.stdout), expected);
    // A driver's output is its user's alone.
    let status = cluster.status();
    let worker = driver(&status, &id).unwrap()["worker"].as_str().unwrap();
    let driver_dir = cluster.dir.path().join(worker).join(&id);
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&driver_dir), 0o700);
    assert_eq!(mode(&driver_dir.join("stdout")), 0o600);
    assert_eq!(mode(&driver_dir.join("stderr")), 0o600);
    // The commands printed to follow the submission work as pasted: they
    // name the master and the certificates.
    let hint = text(&out.stderr);
    let pasted: Vec<Vec<&str>> = hint
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|command| command.split_whitespace().collect())
        .collect();
    assert_eq!(pasted.len(), 2, "{hint}");
    let run_pasted = |words: &[&str]| {
        assert_eq!(words[0], "ember", "{hint}");
        let out = Command::new(ember())
            .args(&words[1..])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("EMBER_MASTER")
            .env_remove("EMBER_CERTS")
            .bounded_output()
            .unwrap();
        assert!(out.status.success(), "{words:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    assert!(run_pasted(&pasted[0]).contains("FINISHED"), "{hint}");
    assert_eq!(run_pasted(&pasted[1]), expected);

    // A reader that goes away (`| head`) ends the output quietly.
    for args in [&["status", "--json"][..], &["list"], &["logs", &id]] {
        let mut child = cluster
            .ember(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.bounded_wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("panicked"), "{args:?}");
    }
    // So does one that closes standard error too, while a note goes there
    // ("only the last 10 bytes").
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = cluster
        .ember(&["logs", &id, "--max-bytes", "10"])
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let list = cluster.run(&["list"]);
    let listed = text(&list.stdout);
    assert!(
        listed.contains("client-mode") && listed.contains(&id),
        "{listed}"
    );
    let status = cluster.status();
    for w in status["workers"].as_array().unwrap() {
        assert_eq!(w["cores_used"], 0, "every core is given back: {status:#}");
    }
}

/// Starts a long client-mode job on both workers and returns the submit
/// process, the application id and its executor PIDs.
pub fn long_client_job(cluster: &Cluster, name: &str) -> (Child, String, Vec<u32>) {
    let job = cluster.job("long.sql", LONG_JOB);
    let submit = cluster
        .ember(&["submit", "--total-executor-cores", "2", "--name", name])
        .arg(&job)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = cluster.wait_for("two executors", Duration::from_secs(20), |s| {
        loopback::app(s, name).is_some_and(|a| {
            a["state"] == "RUNNING" && a["executors"].as_array().is_some_and(|e| e.len() == 2)
        })
    });
    let (app, pids) = two_executor_processes(&status, name);
    (submit, app, pids)
}

/// The id of application `name` in `status`, and the PIDs of its two
/// executor processes, waited for.
pub fn two_executor_processes(status: &Value, name: &str) -> (String, Vec<u32>) {
    let app = loopback::app(status, name).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let start = Instant::now();
    let mut pids = processes("executor", &app);
    while pids.len() < 2 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
        pids = processes("executor", &app);
    }
    assert_eq!(pids.len(), 2, "two executor processes for {app}");
    (app, pids)
}

#[test]
fn executors_exit_when_their_driver_is_killed_stopped_or_done() {
    let cluster = Cluster::start();

    // SIGKILL: the connection dies with the process.
    let (mut submit, app, pids) = long_client_job(&cluster, "killed-driver");
    signal(submit.id(), libc::SIGKILL);
    let _ = submit.wait();
    let took = wait_gone(&pids, Duration::from_secs(10));
    assert!(
        took.is_some(),
        "executors of {app} outlived a SIGKILLed driver"
    );
    cluster.wait_for(
        "the manager to see the app end",
        Duration::from_secs(10),
        |s| {
            loopback::app(s, "killed-driver").is_some_and(|a| a["state"] == "FAILED")
                && s["workers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|w| w["cores_used"] == 0)
        },
    );

    // SIGSTOP: the driver's process is there but silent.
    let (mut submit, app, pids) = long_client_job(&cluster, "stopped-driver");
    signal(submit.id(), libc::SIGSTOP);
    let took = wait_gone(&pids, Duration::from_secs(10));
    signal(submit.id(), libc::SIGKILL);
    let _ = submit.wait();
    assert!(
        took.is_some(),
        "executors of {app} outlived a silent driver"
    );

    // Ctrl-C: the client stops its application and exits.
    let (mut submit, app, pids) = long_client_job(&cluster, "interrupted-driver");
    signal(submit.id(), libc::SIGINT);
    let took = wait_gone(&pids, Duration::from_secs(10));
    let code = submit.wait_within(Duration::from_secs(30)).unwrap();
    assert!(
        took.is_some(),
        "executors of {app} outlived an interrupted driver"
    );
    assert_eq!(code.code(), Some(130));

    // A normal end: the job finishes and the driver exits.
    let quick = cluster.job("quick.sql", "SELECT 1 AS one;\n");
    let out = cluster
        .ember(&["submit", "--format", "csv", "--name", "done-driver"])
        .arg(&quick)
        .bounded_output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "one\n1\n");
    let status = cluster.wait_for("the finished app", Duration::from_secs(10), |s| {
        loopback::app(s, "done-driver").is_some_and(|a| a["state"] == "FINISHED")
    });
    let id = loopback::app(&status, "done-driver").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(wait_gone(&processes("executor", &id), Duration::from_secs(10)).is_some());
}

#[test]
fn a_cluster_manager_restart_loses_no_submission() {
    let mut cluster = Cluster::start();
    let first = cluster.submit_cluster_mode(
        "before-restart",
        Path::new("examples/watch_time.sql"),
        false,
    );
    cluster.wait_for("the first driver", Duration::from_secs(30), |s| {
        driver(s, &first).is_some_and(|d| d["state"] == "FINISHED")
    });

    // A driver that runs across the restart: it waits on a long job.
    let long = cluster.job("long.sql", LONG_JOB);
    let second = cluster.submit_cluster_mode("across-restart", &long, false);
    cluster.wait_for("the second driver to run", Duration::from_secs(20), |s| {
        driver(s, &second).is_some_and(|d| d["state"] == "RUNNING")
            && loopback::app(s, "across-restart").is_some_and(|a| a["state"] == "RUNNING")
    });
    let drivers = processes("driver", &second);
    assert_eq!(drivers.len(), 1);

    cluster.kill_manager();
    std::thread::sleep(Duration::from_millis(300));
    cluster.start_manager();
    let status = cluster.wait_for(
        "workers and the driver to return",
        Duration::from_secs(20),
        |s| {
            s["workers"].as_array().is_some_and(|w| w.len() == 2)
                && driver(s, &second).is_some_and(|d| d["state"] == "RUNNING")
                && loopback::app(s, "across-restart").is_some_and(|a| a["state"] == "RUNNING")
                && s["recovering"] == false
        },
    );
    assert_eq!(
        driver(&status, &first).unwrap()["state"],
        "FINISHED",
        "history survives: {status:#}"
    );
    let had = loopback::app(&status, "before-restart").unwrap()["removed_executors"]
        .as_array()
        .unwrap();
    assert!(
        !had.is_empty() && had.iter().all(|e| e["state"] == "KILLED"),
        "what ran where survives too: {status:#}"
    );
    // The journal holds every application's secret: owner-only.
    let journal = cluster.dir.path().join("cm-state/cluster-manager.redb");
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&journal).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode, 0o600);
    assert_eq!(
        processes("driver", &second),
        drivers,
        "the same driver, not a second copy"
    );

    let killed = cluster.run(&["kill", &second]);
    assert!(killed.status.success(), "{}", text(&killed.stderr));
    cluster.wait_for("the killed driver", Duration::from_secs(10), |s| {
        driver(s, &second).is_some_and(|d| d["state"] == "KILLED")
    });
    assert!(wait_gone(&drivers, Duration::from_secs(10)).is_some());
}

#[test]
fn supervise_restarts_a_failing_driver_once_and_never_runs_two() {
    let cluster = Cluster::start();
    let data = cluster.dir.path().join("numbers.csv");
    std::fs::write(&data, "x\nnot-a-number\n").unwrap();
    // The first attempt commits its COPY, then fails; the second runs the
    // whole script again and must not write the output a second time.
    let out = cluster.dir.path().join("copied");
    let job = cluster.job(
        "flaky.sql",
        &format!(
            "CREATE EXTERNAL TABLE numbers (x BIGINT) STORED AS CSV LOCATION '{}' \
             OPTIONS ('format.has_header' 'true');\n\
             COPY (SELECT value FROM generate_series(1, 20)) TO '{}/' STORED AS CSV;\n\
             SELECT sum(x) AS total FROM numbers;\n",
            data.display(),
            out.display()
        ),
    );
    let id = cluster.submit_cluster_mode("flaky", &job, true);

    let mut most_at_once = 0;
    let mut fixed = false;
    let start = Instant::now();
    loop {
        most_at_once = most_at_once.max(processes("driver", &id).len());
        let status = cluster.status();
        let driver = driver(&status, &id).unwrap().clone();
        if !fixed && driver["state"] == "RELAUNCHING" {
            std::fs::write(&data, "x\n40\n2\n").unwrap();
            fixed = true;
        }
        if driver["state"] == "FINISHED" {
            assert!(fixed, "it failed first: {driver:#}");
            assert_eq!(driver["restarts"], 1, "{driver:#}");
            break;
        }
        assert!(
            driver["state"] != "FAILED" && start.elapsed() < Duration::from_secs(40),
            "{driver:#}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(most_at_once, 1, "never two copies of one driver");
    let logs = cluster.run(&["logs", &id]);
    assert!(
        text(&logs.stdout).ends_with("total\n42\n"),
        "{}",
        text(&logs.stdout)
    );
    let mut rows = 0;
    for file in std::fs::read_dir(&out).unwrap() {
        let path = file.unwrap().path();
        if path.extension().is_some_and(|e| e == "csv") {
            rows += std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .skip(1)
                .count();
        }
    }
    assert_eq!(rows, 20, "the output of one attempt, not of both");
}

#[test]
fn bad_submissions_are_refused_or_wait_with_a_reason() {
    let cluster = Cluster::start();
    // A missing job file, and a table over a missing path: refused before
    // anything is submitted.
    let out = cluster.run(&["submit", "--deploy-mode", "cluster", "no/such/job.sql"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot read job file"),
        "{}",
        text(&out.stderr)
    );
    let job = cluster.job(
        "missing.sql",
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/no/such/dir/';\nSELECT * FROM t;\n",
    );
    let out = cluster
        .ember(&["submit", "--deploy-mode", "cluster"])
        .arg(&job)
        .bounded_output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("'/no/such/dir/' does not exist"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(cluster.status()["drivers"].as_array().unwrap().len(), 0);

    // More cores per executor than any worker has: it waits, and says why.
    let quick = cluster.job("quick.sql", "SELECT 1;\n");
    let mut submit = cluster
        .ember(&["submit", "--executor-cores", "4", "--name", "too-big"])
        .arg(&quick)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = cluster.wait_for("the waiting reason", Duration::from_secs(10), |s| {
        loopback::app(s, "too-big").is_some_and(|a| a["state"] == "WAITING")
    });
    let reason = loopback::app(&status, "too-big").unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("needs 4 cores") && reason.contains("largest worker has 1 cores"),
        "{reason}"
    );
    let app = loopback::app(&status, "too-big").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = text(&cluster.run(&["status", &app]).stdout);
    assert!(shown.contains("needs 4 cores"), "{shown}");
    // The client says so too.
    let mut err = submit.stderr.take().unwrap();
    let start = Instant::now();
    let mut said = String::new();
    let mut buf = [0u8; 512];
    while !said.contains("has no executors yet") && start.elapsed() < Duration::from_secs(15) {
        match err.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => said.push_str(&text(&buf[..n])),
        }
    }
    assert!(said.contains("needs 4 cores"), "{said}");
    // Killed while it waits, the client ends on its own.
    let out = cluster.run(&["kill", &app]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let start = Instant::now();
    let mut ended = None;
    while ended.is_none() && start.elapsed() < Duration::from_secs(10) {
        ended = submit.try_wait().unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = submit.kill();
    let _ = submit.wait();
    assert!(
        ended.is_some_and(|code| !code.success()),
        "a client killed while waiting for executors must exit, failed: {ended:?}"
    );

    // Asking for nothing is refused before anything reaches the cluster.
    let apps_before = cluster.status()["applications"]
        .as_array()
        .map_or(0, Vec::len);
    for zero in [
        ["--total-executor-cores", "0"],
        ["--num-executors", "0"],
        ["--driver-cores", "0"],
        ["--executor-cores", "0"],
    ] {
        let out = cluster
            .ember(&["submit"])
            .args(zero)
            .arg(&quick)
            .bounded_output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{zero:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(&format!("invalid value '0' for '{} <N>'", zero[0])),
            "{}",
            text(&out.stderr)
        );
    }
    let apps_after = cluster.status()["applications"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(
        apps_before, apps_after,
        "a refused request registered an application"
    );

    // A request no worker can satisfy fails once its bound has passed,
    // saying why, and leaves nothing waiting on the cluster.
    let mut never = cluster
        .ember(&[
            "submit",
            "--executor-cores",
            "4",
            "--name",
            "never-fits",
            "--conf",
            "ember.scheduler.noExecutorTimeout=2s",
        ])
        .arg(&quick)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while never.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = never.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = never.bounded_wait_with_output().unwrap();
    assert!(
        start.elapsed() <= Duration::from_secs(20),
        "a request no worker can satisfy still waits after 20 s"
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("got no executors within 2s") && err.contains("needs 4 cores"),
        "{err}"
    );
    cluster.wait_for(
        "the unsatisfiable application to end",
        Duration::from_secs(10),
        |s| loopback::app(s, "never-fits").is_some_and(|a| a["state"] != "WAITING"),
    );

    // A worker holding a client's certificate is refused at once.
    let out = Command::new(ember())
        .args([
            "--role",
            "worker",
            "--cluster-manager",
            cluster.master.trim_start_matches("ember://"),
        ])
        .args(["--name", ember_testkit::CLIENT])
        .arg("--certs")
        .arg(cluster.certs())
        .bounded_output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("is for a client") && err.contains("--role worker"),
        "{err}"
    );

    // A state dir that cannot be one.
    let file = cluster.dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let out = Command::new(ember())
        .args([
            "--role",
            "cluster-manager",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "cm",
        ])
        .arg("--certs")
        .arg(cluster.certs())
        .arg("--state-dir")
        .arg(&file)
        .bounded_output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is a file, not a directory"),
        "{}",
        text(&out.stderr)
    );
}

/// Submits the long job in cluster mode with `--supervise` and waits until
/// its driver and application run; returns the submission, the driver's
/// worker and the status that showed it.
fn run_supervised_long_job(cluster: &Cluster, name: &str) -> (String, String, Value) {
    let long = cluster.job("long.sql", LONG_JOB);
    let id = cluster.submit_cluster_mode(name, &long, true);
    let status = cluster.wait_for("the driver to run", Duration::from_secs(20), |s| {
        driver(s, &id).is_some_and(|d| d["state"] == "RUNNING")
            && loopback::app(s, name).is_some_and(|a| a["state"] == "RUNNING")
    });
    let home = driver(&status, &id).unwrap()["worker"]
        .as_str()
        .unwrap()
        .to_string();
    (id, home, status)
}

#[test]
fn a_lost_worker_takes_its_executors_and_its_supervised_driver_moves() {
    let mut cluster = Cluster::start();
    let (id, first_home, status) = run_supervised_long_job(&cluster, "moving");
    let old_driver = processes("driver", &id);
    assert_eq!(old_driver.len(), 1);
    let app = loopback::app(&status, "moving").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let executors = processes("executor", &app);
    assert!(!executors.is_empty());

    // SIGKILL the worker running the driver: its children die with it, the
    // application's other executors follow their driver, and the driver is
    // relaunched on the other worker.
    cluster.kill_worker(&first_home);
    assert!(wait_gone(&old_driver, Duration::from_secs(10)).is_some());
    assert!(wait_gone(&executors, Duration::from_secs(10)).is_some());
    // Its lease runs out first (it might still run, cut off): 20 s.
    let status = cluster.wait_for("the driver to move", Duration::from_secs(45), |s| {
        driver(s, &id).is_some_and(|d| {
            d["state"] == "RUNNING" && d["worker"] != first_home.as_str() && d["restarts"] == 1
        })
    });
    let lost = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == first_home.as_str())
        .unwrap();
    assert_eq!(lost["state"], "LOST", "{status:#}");
    assert_eq!(
        processes("driver", &id).len(),
        1,
        "one copy, on the other worker"
    );
    let killed = cluster.run(&["kill", &id]);
    assert!(killed.status.success());
}

/// Watches a supervised driver for `how_long`: never two processes of it,
/// never relaunched.
fn assert_one_driver_throughout(cluster: &Cluster, id: &str, how_long: Duration) {
    let start = Instant::now();
    while start.elapsed() < how_long {
        let running = processes("driver", id);
        assert!(
            running.len() <= 1,
            "two copies of {id} at once: {running:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = cluster.status();
    let record = driver(&status, id).unwrap();
    assert_eq!(record["restarts"], 0, "{record:#}");
}

#[test]
fn pausing_the_manager_or_a_drivers_worker_never_runs_the_driver_twice() {
    let cluster = Cluster::start();
    let (id, home, _) = run_supervised_long_job(&cluster, "paused");
    let first = processes("driver", &id);
    assert_eq!(first.len(), 1);

    // The manager stands still for 3 s (every peer declares it gone), then
    // resumes: it must not take the workers' silence for their loss.
    let manager = cluster.manager_pid().unwrap();
    signal(manager, libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(3));
    signal(manager, libc::SIGCONT);
    assert_one_driver_throughout(&cluster, &id, Duration::from_secs(5));
    assert_eq!(processes("driver", &id), first, "the same driver runs on");

    // The worker hosting the driver stands still for 4 s: the manager loses
    // it, but the driver may still run there, so nothing runs in its place.
    let worker = loopback::processes("worker", &home)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no worker process named {home}"));
    signal(worker, libc::SIGSTOP);
    assert_one_driver_throughout(&cluster, &id, Duration::from_secs(4));
    signal(worker, libc::SIGCONT);
    assert_one_driver_throughout(&cluster, &id, Duration::from_secs(4));
    let status = cluster.wait_for("the worker back", Duration::from_secs(10), |s| {
        driver(s, &id).is_some_and(|d| d["state"] == "RUNNING" && d["worker"] == home.as_str())
    });
    assert_eq!(driver(&status, &id).unwrap()["restarts"], 0);
    assert_eq!(processes("driver", &id), first, "the same driver runs on");
    let killed = cluster.run(&["kill", &id]);
    assert!(killed.status.success());
}

/// Runs `command` to its end, but no longer than `limit`: a process that
/// should have refused to start and did not is killed and reported.
fn run_bounded(command: &mut Command, limit: Duration) -> Output {
    command.output_within(limit).unwrap()
}

/// Certificates for lone processes: a manager `cm`, a client, a worker `w1`.
fn lone_certs(dir: &Path) -> PathBuf {
    use ember_certs::{IssueRequest, Role};
    let certs = dir.join("certs");
    ember_certs::init_ca(&certs, "lone", 5, false).unwrap();
    for (role, name) in [
        (Role::ClusterManager, "cm"),
        (Role::Client, loopback::CLIENT),
        (Role::Worker, "w1"),
    ] {
        ember_certs::issue(&certs, &IssueRequest::new(role, name, vec![], 5)).unwrap();
    }
    certs
}

/// `ember --role cluster-manager` on a free loopback port.
fn manager_command(certs: &Path, state_dir: &Path) -> Command {
    let mut command = Command::new(ember());
    command
        .args(["--role", "cluster-manager", "--listen", "127.0.0.1:0"])
        .args(["--name", "cm"])
        .arg("--certs")
        .arg(certs)
        .arg("--state-dir")
        .arg(state_dir);
    command
}

/// A cluster manager without workers, killed by PID when dropped.
struct LoneManager {
    child: Child,
    master: String,
    certs: PathBuf,
    /// What it wrote to stderr, as it comes.
    stderr: std::sync::Arc<Mutex<String>>,
}

impl LoneManager {
    fn start(mut command: Command, certs: &Path) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&text(&buf[..n]));
            }
        });
        let mut out = child.stdout.take().unwrap();
        let mut banner = Vec::new();
        let mut byte = [0u8; 1];
        while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            banner.push(byte[0]);
        }
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let master = text(&banner)
            .split_whitespace()
            .find(|w| w.starts_with("ember://"))
            .map(str::to_string);
        let mut manager = LoneManager {
            child,
            master: String::new(),
            certs: certs.to_path_buf(),
            stderr,
        };
        match master {
            Some(m) => manager.master = m,
            None => panic!(
                "no address in the banner '{}'; stderr: {}",
                text(&banner),
                manager.stderr.lock().unwrap()
            ),
        }
        manager
    }

    fn ember(&self, args: &[&str]) -> Command {
        let mut command = Command::new(ember());
        command
            .args(args)
            .args(["--master", &self.master])
            .arg("--certs")
            .arg(&self.certs)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        command
    }

    fn status(&self) -> Value {
        let out = run_bounded(
            &mut self.ember(&["status", "--json"]),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Submits a cluster-mode job (no worker will run it) and returns its id.
    fn submit(&self, name: &str) -> String {
        let out = run_bounded(
            self.ember(&["submit", "--deploy-mode", "cluster", "--name", name])
                .arg("examples/watch_time.sql"),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    }
}

impl Drop for LoneManager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const JOURNALED_APPS: usize = 20;

/// A state dir whose journal holds finished applications and submissions,
/// opened twice so its backup holds them too.
fn journal_with_history(state_dir: &Path) {
    use ember_actors::cluster_manager::{
        AppRecord, AppRequest, DriverJob, DriverRecord, DriverRequest, ExecutorState,
        ExecutorStatus, Journal,
    };
    use ember_actors::remote::NodeContact;
    {
        let journal = Journal::open(state_dir).unwrap();
        for n in 0..JOURNALED_APPS {
            let app = AppRecord {
                name: format!("journaled-app-{n}"),
                request: AppRequest {
                    name: format!("journaled-app-{n}"),
                    executor_cores: 1,
                    executor_memory_mb: 512,
                    max_cores: Some(1),
                    conf: vec![],
                    binary: None,
                    files: vec![],
                },
                state: "FINISHED".into(),
                reason: None,
                submission: None,
                started: "2026-11-23 10:00:00".into(),
                ended: Some("2026-11-23 10:01:00".into()),
                driver: NodeContact {
                    node: ember_transport::NodeId("client".into()),
                    addr: "127.0.0.1:7078".parse().unwrap(),
                    host: "127.0.0.1".into(),
                },
                secret: "s3cret".into(),
                executors: vec![ExecutorStatus {
                    executor: 0,
                    worker: "w7".into(),
                    cores: 1,
                    memory_mb: 512,
                    state: ExecutorState::Killed,
                    reason: None,
                    usage: None,
                }],
            };
            journal.put_app(&format!("app-{n}"), &app).unwrap();
            let driver = DriverRecord {
                job: DriverJob {
                    name: format!("journaled-driver-{n}"),
                    script: "SELECT 1;".into(),
                    conf: vec![],
                    executor_cores: 1,
                    executor_memory_mb: 512,
                    max_cores: None,
                    args: vec![],
                    base_dir: None,
                    binary: None,
                    files: vec![],
                },
                request: DriverRequest {
                    cores: 1,
                    memory_mb: 512,
                    supervise: false,
                },
                state: "FINISHED".into(),
                reason: None,
                worker: Some("w7".into()),
                restarts: 0,
                submitted: "2026-11-23 10:00:00".into(),
                app: None,
                token: None,
            };
            journal.put_driver(&format!("driver-{n}"), &driver).unwrap();
        }
    }
    drop(Journal::open(state_dir).unwrap());
}

use ember_actors::cluster_manager::journal::damage::{
    damage as damage_journal, flip_a_byte, noise,
};

#[test]
fn a_damaged_journal_stops_the_manager_with_the_way_back() {
    let dir = tempfile::tempdir().unwrap();
    let certs = lone_certs(dir.path());
    type Damage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Damage)> = vec![
        (
            "0 bytes",
            Box::new(|s: &Path| std::fs::write(s.join("cluster-manager.redb"), b"").unwrap()),
        ),
        (
            "a flipped byte in the applications table",
            Box::new(|s: &Path| {
                assert!(damage_journal(s, "journaled-app-", flip_a_byte).unwrap() > 0)
            }),
        ),
        (
            "512 random bytes in the applications table",
            Box::new(|s: &Path| assert!(damage_journal(s, "journaled-app-", noise).unwrap() > 0)),
        ),
        (
            "a flipped byte in the submissions table",
            Box::new(|s: &Path| {
                assert!(damage_journal(s, "journaled-driver-", flip_a_byte).unwrap() > 0)
            }),
        ),
    ];
    for (i, (case, damage)) in cases.iter().enumerate() {
        let state_dir = dir.path().join(format!("state-{i}"));
        journal_with_history(&state_dir);
        damage(&state_dir);
        let out = run_bounded(
            &mut manager_command(&certs, &state_dir),
            Duration::from_secs(20),
        );
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{case}: it must not start: {err}");
        let journal = state_dir.join("cluster-manager.redb");
        let backup = state_dir.join("cluster-manager.redb.backup");
        for said in [
            format!("the journal {} cannot be read in full", journal.display()),
            format!("cp {} {}", backup.display(), journal.display()),
            "--discard-journal".to_string(),
        ] {
            assert!(err.contains(&said), "{case}: no '{said}' in: {err}");
        }
    }

    // The backup named brings everything back on a normal start.
    let state_dir = dir.path().join("state-1");
    std::fs::copy(
        state_dir.join("cluster-manager.redb.backup"),
        state_dir.join("cluster-manager.redb"),
    )
    .unwrap();
    let manager = LoneManager::start(manager_command(&certs, &state_dir), &certs);
    let status = manager.status();
    assert_eq!(status["apps"].as_array().unwrap().len(), JOURNALED_APPS);
    assert_eq!(status["drivers"].as_array().unwrap().len(), JOURNALED_APPS);
    drop(manager);

    // --discard-journal starts empty on purpose, and says so.
    let state_dir = dir.path().join("state-2");
    let mut command = manager_command(&certs, &state_dir);
    command.arg("--discard-journal");
    let manager = LoneManager::start(command, &certs);
    let status = manager.status();
    assert!(status["apps"].as_array().unwrap().is_empty(), "{status:#}");
    assert!(status["drivers"].as_array().unwrap().is_empty());
    let warned = manager.stderr.lock().unwrap().clone();
    assert!(
        warned.contains("--discard-journal: starting with an empty journal")
            && warned.contains("cluster-manager.redb.discarded-"),
        "{warned}"
    );
}

#[test]
fn a_finished_application_keeps_its_executors_across_a_manager_restart() {
    let dir = tempfile::tempdir().unwrap();
    let certs = lone_certs(dir.path());
    let state_dir = dir.path().join("state");
    journal_with_history(&state_dir);
    let manager = LoneManager::start(manager_command(&certs, &state_dir), &certs);
    let status = manager.status();
    let app = loopback::app(&status, "journaled-app-3").unwrap();
    assert_eq!(app["executors"].as_array().unwrap().len(), 0);
    let had = &app["removed_executors"][0];
    assert_eq!(
        (&had["worker"], &had["state"]),
        (&"w7".into(), &"KILLED".into())
    );
    let id = app["id"].as_str().unwrap();
    let shown = run_bounded(&mut manager.ember(&["status", id]), Duration::from_secs(30));
    let shown = text(&shown.stdout);
    assert!(shown.contains("w7") && shown.contains("KILLED"), "{shown}");
    let listed = run_bounded(&mut manager.ember(&["list"]), Duration::from_secs(30));
    let listed = text(&listed.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.contains("journaled-app-3") && l.contains("w7")),
        "{listed}"
    );
}

#[test]
fn two_clusters_started_in_the_same_second_give_different_ids() {
    let dir = tempfile::tempdir().unwrap();
    let certs = lone_certs(dir.path());
    let one = LoneManager::start(manager_command(&certs, &dir.path().join("one")), &certs);
    let two = LoneManager::start(manager_command(&certs, &dir.path().join("two")), &certs);
    let first = one.submit("first");
    let second = two.submit("second");
    let later = one.submit("later");
    assert_ne!(first, second);
    // driver-YYYYMMDDhhmmss-NNNN-CLUSTER: the same number, not the same id.
    let parts = |id: &str| id.split('-').map(str::to_string).collect::<Vec<_>>();
    let (a, b) = (parts(&first), parts(&second));
    assert_eq!(a.len(), 4, "{first}");
    assert_eq!(
        (a[0].as_str(), a[2].as_str()),
        ("driver", "0000"),
        "{first}"
    );
    assert_eq!(b[2], "0000", "{second}");
    assert_ne!(a[3], b[3], "each cluster has its own id: {first} {second}");
    assert_eq!(parts(&later)[3], a[3], "one cluster keeps one id");
    assert!(
        first < later,
        "ids of a cluster sort in order: {first} {later}"
    );
}

#[test]
fn a_second_worker_on_the_same_work_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certs = lone_certs(dir.path());
    let work = dir.path().join("work");
    let worker = |work: &Path| {
        let mut command = Command::new(ember());
        command
            .args(["--role", "worker", "--cluster-manager", "127.0.0.1:9"])
            .args(["--name", "w1", "--cores", "1", "--memory", "1g"])
            .arg("--certs")
            .arg(&certs)
            .arg("--work-dir")
            .arg(work);
        command
    };
    // The first keeps trying to reach a manager that is not there.
    let mut first = worker(&work)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = work.join("worker.lock");
    let start = Instant::now();
    let pid = first.id().to_string();
    while std::fs::read_to_string(&lock)
        .ok()
        .as_deref()
        .map(str::trim)
        != Some(pid.as_str())
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the first worker never locked its work dir"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = run_bounded(&mut worker(&work), Duration::from_secs(20));
    let _ = first.kill();
    let _ = first.wait();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "work dir {} is in use by another worker (PID {})",
            work.display(),
            first.id()
        )) && err.contains("give each worker its own --work-dir"),
        "{err}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&work).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "a new work dir is owner-only");
}

#[test]
fn more_cluster_mode_submissions_than_cores_all_finish() {
    // Two workers of two cores: drivers may hold two of the four, so the
    // applications always have two for executors.
    let cluster = Cluster::start_sized(2);
    let job = cluster.job(
        "count.sql",
        "SELECT count(*) AS n FROM generate_series(1, 30000000);\n",
    );
    let queued = |status: &Value, ids: &[String]| {
        ids.iter().filter_map(|id| driver(status, id)).any(|d| {
            d["state"] == "QUEUED"
                && d["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("ember.deploy.maxDriverCoreShare"))
        })
    };
    let mut ids = Vec::new();
    let mut saw_queued = false;
    for i in 0..8 {
        // Each job's task waits 2 s first, so the drivers overlap.
        let out = cluster
            .ember(&["submit", "--deploy-mode", "cluster"])
            .args(["--name", &format!("crowd-{i}")])
            .args(["--conf", "ember.faults.delayTask=0.*:2s"])
            .arg(&job)
            .bounded_output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        ids.push(text(&out.stdout).trim().to_string());
        saw_queued |= queued(&cluster.status(), &ids);
    }
    let start = Instant::now();
    loop {
        let status = cluster.status();
        let drivers: Vec<&Value> = ids.iter().map(|id| driver(&status, id).unwrap()).collect();
        let running = drivers.iter().filter(|d| d["state"] == "RUNNING").count();
        assert!(running <= 2, "at most two drivers at once: {status:#}");
        saw_queued |= queued(&status, &ids);
        if drivers.iter().all(|d| d["state"] == "FINISHED") {
            break;
        }
        assert!(
            drivers
                .iter()
                .all(|d| !matches!(d["state"].as_str(), Some("FAILED" | "KILLED"))),
            "{status:#}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the submissions did not all finish: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        saw_queued,
        "submissions beyond the drivers' share wait, QUEUED"
    );
    for id in &ids {
        let logs = cluster.run(&["logs", id]);
        assert!(logs.status.success(), "{}", text(&logs.stderr));
        assert!(
            text(&logs.stdout).contains("30000000"),
            "{id}: {}",
            text(&logs.stdout)
        );
    }
}

#[test]
fn a_script_of_several_megabytes_runs_in_cluster_mode() {
    let cluster = Cluster::start();
    // 5,000,000 bytes of numbered pieces in two literals: a part lost,
    // doubled or out of order changes the length of the first or where a
    // piece sits in the second. Functions of literals only, so the driver
    // folds them and no task carries megabytes.
    let numbered =
        |from: u32, to: u32| -> String { (from..to).map(|i| format!("{i:07}.")).collect() };
    let sql = format!(
        "SELECT length('{}') AS n, strpos('{}', '0600000.') AS at;\n",
        numbered(0, 312_500),
        numbered(312_500, 625_000)
    );
    assert!(sql.len() > 5_000_000);
    let job = cluster.job("large.sql", &sql);
    let id = cluster.submit_cluster_mode("large-script", &job, false);
    cluster.wait_for(
        "the large script's driver to finish",
        Duration::from_secs(120),
        |s| driver(s, &id).is_some_and(|d| d["state"] == "FINISHED"),
    );
    let logs = cluster.run(&["logs", &id]);
    assert!(logs.status.success(), "{}", text(&logs.stderr));
    assert_eq!(text(&logs.stdout), "n,at\n2500000,2300001\n");

    // Past the limit, the submission is refused at once, with both sizes.
    let huge = cluster.dir.path().join("huge.sql");
    let mut file = std::fs::File::create(&huge).unwrap();
    use std::io::Write;
    write!(file, "SELECT '").unwrap();
    let block = "x".repeat(1 << 20);
    for _ in 0..65 {
        file.write_all(block.as_bytes()).unwrap();
    }
    writeln!(file, "' AS s;").unwrap();
    drop(file);
    let out = cluster
        .ember(&["submit", "--deploy-mode", "cluster"])
        .arg(&huge)
        .bounded_output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let size = std::fs::metadata(&huge).unwrap().len();
    assert!(
        err.contains(&format!("{size} bytes")) && err.contains("67108864 bytes"),
        "{err}"
    );
    assert!(!err.contains("not speaking the Ember protocol"), "{err}");
}

/// A task whose plan cannot fit in one message (a 5 MB literal in a
/// filter) fails its job with the reason, instead of waiting forever for
/// an answer from an executor that never got it.
#[test]
fn a_task_too_large_to_send_fails_its_job_with_the_reason() {
    let cluster = Cluster::start();
    let big = "x".repeat(5 * 1024 * 1024);
    let job = cluster.job(
        "big-literal.sql",
        &format!(
            "SELECT count(*) FROM generate_series(1, 100) AS t(v) \
             WHERE CAST(v AS VARCHAR) = '{big}';\n"
        ),
    );
    let out = run_bounded(
        cluster.ember(&["submit"]).arg(&job),
        Duration::from_secs(60),
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("cannot be sent to an executor"), "{stderr}");
    assert!(stderr.contains("ember.transport.maxFrameBytes"), "{stderr}");
    assert!(
        stderr.contains("keep large values in files or tables"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not speaking the Ember protocol"),
        "{stderr}"
    );
}

/// A client-mode driver whose certificate does not name its
/// `--driver-host` is refused before it registers: its executors would
/// refuse it on every task.
#[test]
fn a_driver_whose_certificate_does_not_name_its_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certs = lone_certs(dir.path());
    let job = dir.path().join("one.sql");
    std::fs::write(&job, "SELECT 1;\n").unwrap();
    let out = run_bounded(
        Command::new(ember())
            .args(["submit", "--master", "ember://127.0.0.1:9", "--certs"])
            .arg(&certs)
            .args(["--driver-host", "127.0.0.2"])
            .arg(&job),
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "the certificate {} does not name --driver-host 127.0.0.2",
            certs.join(format!("{}.pem", loopback::CLIENT)).display()
        )),
        "{err}"
    );
    assert!(err.contains("--role client"), "{err}");
    assert!(
        err.contains("or pass a --driver-host the certificate names"),
        "{err}"
    );
}

/// `ember --role worker` named `name` in `certs`, for a manager that is
/// not there.
fn lone_worker(certs: &Path, name: &str, work: &Path) -> Command {
    let mut command = Command::new(ember());
    command
        .args(["--role", "worker", "--cluster-manager", "127.0.0.1:9"])
        .args(["--name", name, "--cores", "1", "--memory", "1g"])
        .arg("--certs")
        .arg(certs)
        .arg("--work-dir")
        .arg(work);
    command
}

#[test]
fn a_worker_whose_certificate_does_not_name_its_host_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let certs = lone_certs(dir.path());
    let out = run_bounded(
        lone_worker(&certs, "w1", &dir.path().join("work")).args(["--host", "127.0.0.2"]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "the certificate {} does not name --host 127.0.0.2: it names localhost, 127.0.0.1, ::1",
            certs.join("w1.pem").display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "`ember certs issue --dir {} --role worker --name w1 --host localhost --host 127.0.0.1 --host ::1 --host 127.0.0.2`",
            certs.display()
        )),
        "{err}"
    );
    // A host it does name is fine: the worker starts (and looks for its
    // manager, which is not there).
    let mut named = lone_worker(&certs, "w1", &dir.path().join("work2"))
        .args(["--host", "localhost"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = Vec::new();
    let mut byte = [0u8; 1];
    let mut stderr = named.stderr.take().unwrap();
    while stderr.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        banner.push(byte[0]);
    }
    let _ = named.kill();
    let _ = named.wait();
    assert!(
        text(&banner).contains("registering with 127.0.0.1:9"),
        "{}",
        text(&banner)
    );
}

#[test]
fn processes_refuse_a_certificate_out_of_its_validity_and_say_how_to_reissue() {
    use ember_certs::{IssueRequest, Role};
    let dir = tempfile::tempdir().unwrap();
    let certs = lone_certs(dir.path());
    let now = time::OffsetDateTime::now_utc();
    let expired = |role, name: &str| {
        let mut request = IssueRequest::new(role, name, vec![], 1);
        request.not_before = now - time::Duration::days(3);
        request.not_after = now - time::Duration::days(1);
        ember_certs::issue(&certs, &request).unwrap();
        request.not_after
    };
    let refused = |out: Output, role: &str, name: &str, not_after| {
        assert!(!out.status.success(), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!(
                "the certificate {} expired at {}",
                certs.join(format!("{name}.pem")).display(),
                ember_certs::utc(not_after)
            )),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "issue a new one with `ember certs issue --dir {} --role {role} --name {name} --host localhost",
                certs.display()
            )),
            "{err}"
        );
    };

    let ended = expired(Role::ClusterManager, "old-cm");
    let mut manager = Command::new(ember());
    manager
        .args(["--role", "cluster-manager", "--listen", "127.0.0.1:0"])
        .args(["--name", "old-cm"])
        .arg("--certs")
        .arg(&certs)
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    let out = run_bounded(&mut manager, Duration::from_secs(20));
    refused(out, "cluster-manager", "old-cm", ended);

    let ended = expired(Role::Worker, "old-w");
    let out = run_bounded(
        &mut lone_worker(&certs, "old-w", &dir.path().join("work")),
        Duration::from_secs(20),
    );
    refused(out, "worker", "old-w", ended);

    // Clients refuse before they dial: nothing listens at port 9.
    let ended = expired(Role::Client, "old-client");
    let client = |args: &[&str], name: &str| {
        let mut command = Command::new(ember());
        command
            .args(args)
            .args(["--master", "ember://127.0.0.1:9", "--cert-name", name])
            .arg("--certs")
            .arg(&certs)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        run_bounded(&mut command, Duration::from_secs(30))
    };
    refused(
        client(&["status"], "old-client"),
        "client",
        "old-client",
        ended,
    );
    refused(
        client(&["submit", "examples/watch_time.sql"], "old-client"),
        "client",
        "old-client",
        ended,
    );

    let mut early = IssueRequest::new(Role::Client, "early", vec![], 1);
    early.not_before = now + time::Duration::days(2);
    early.not_after = now + time::Duration::days(9);
    ember_certs::issue(&certs, &early).unwrap();
    let out = client(&["status"], "early");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "the certificate {} is not valid until {}",
            certs.join("early.pem").display(),
            ember_certs::utc(early.not_before)
        )) && err.contains("check this machine's clock"),
        "{err}"
    );
}

#[test]
fn a_certificate_near_its_end_starts_with_a_warning() {
    use ember_certs::{IssueRequest, Role};
    let dir = tempfile::tempdir().unwrap();
    let certs = lone_certs(dir.path());
    ember_certs::issue(
        &certs,
        &IssueRequest::new(Role::ClusterManager, "cm", vec![], 2),
    )
    .unwrap();
    let manager = LoneManager::start(manager_command(&certs, &dir.path().join("state")), &certs);
    let start = Instant::now();
    let warned = format!(
        "warning: the certificate {} expires at",
        certs.join("cm.pem").display()
    );
    while !manager.stderr.lock().unwrap().contains(&warned) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no warning: {}",
            manager.stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        manager
            .stderr
            .lock()
            .unwrap()
            .contains("issue a new one before then with `ember certs issue --dir"),
        "{}",
        manager.stderr.lock().unwrap()
    );
}

#[test]
fn a_client_certificate_of_another_ca_is_named_on_both_sides() {
    use ember_certs::{IssueRequest, Role};
    let dir = tempfile::tempdir().unwrap();
    let certs = lone_certs(dir.path());
    let manager = LoneManager::start(manager_command(&certs, &dir.path().join("state")), &certs);
    // A client certificate from another CA, beside this cluster's ca.pem:
    // the client trusts the manager, the manager does not trust it.
    let other = dir.path().join("other");
    ember_certs::init_ca(&other, "other", 5, false).unwrap();
    ember_certs::issue(
        &other,
        &IssueRequest::new(Role::Client, "stranger", vec![], 5),
    )
    .unwrap();
    std::fs::copy(certs.join("ca.pem"), other.join("ca.pem")).unwrap();
    let mut status = Command::new(ember());
    status
        .args([
            "status",
            "--master",
            &manager.master,
            "--cert-name",
            "stranger",
        ])
        .arg("--certs")
        .arg(&other);
    let out = run_bounded(&mut status, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "the peer refused this node's certificate: it is not signed by the cluster's CA"
        ) && err.contains("TLS alert 48 unknown_ca"),
        "{err}"
    );
    // The manager says who presented what.
    let start = Instant::now();
    let logged = loop {
        let seen = manager.stderr.lock().unwrap().clone();
        if let Some(line) = seen.lines().find(|l| l.contains("refused the certificate")) {
            break line.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the manager logged no refusal: {seen}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        logged.contains("refused the certificate 127.0.0.1:")
            && logged.contains("'stranger' (client), issued by 'CN=other CA")
            && logged.contains("it is not signed by this node's CA")
            && logged.contains("TLS alert 48 unknown_ca"),
        "{logged}"
    );

    // Two clusters made with the same name have CAs of the same name:
    // the check fails on the signature instead.
    let twin = dir.path().join("twin");
    ember_certs::init_ca(&twin, "lone", 5, false).unwrap();
    ember_certs::issue(&twin, &IssueRequest::new(Role::Client, "twin", vec![], 5)).unwrap();
    std::fs::copy(certs.join("ca.pem"), twin.join("ca.pem")).unwrap();
    let mut status = Command::new(ember());
    status
        .args(["status", "--master", &manager.master, "--cert-name", "twin"])
        .arg("--certs")
        .arg(&twin);
    let err = text(&run_bounded(&mut status, Duration::from_secs(30)).stderr);
    assert!(
        err.contains(
            "the peer refused this node's certificate: it is not signed by the cluster's CA \
             (another CA of the same name signed it)"
        ),
        "{err}"
    );

    // A whole other cluster's directory: the client refuses the manager.
    let elsewhere = dir.path().join("elsewhere");
    ember_certs::init_ca(&elsewhere, "elsewhere", 5, false).unwrap();
    ember_certs::issue(
        &elsewhere,
        &IssueRequest::new(Role::Client, "me", vec![], 5),
    )
    .unwrap();
    let mut status = Command::new(ember());
    status
        .args(["status", "--master", &manager.master])
        .arg("--certs")
        .arg(&elsewhere);
    let err = text(&run_bounded(&mut status, Duration::from_secs(30)).stderr);
    assert!(
        err.contains(
            "this node refused the peer's certificate: it is not signed by this node's CA \
             (the ca.pem in its --certs directory)"
        ),
        "{err}"
    );
}

/// What an `ember` process runs (its binary), from /proc.
fn program_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

/// Waits for live `--role ROLE` processes with `needle` among their
/// arguments.
fn wait_for_processes(role: &str, needle: &str) -> Vec<u32> {
    let start = Instant::now();
    loop {
        let pids = processes(role, needle);
        if !pids.is_empty() {
            return pids;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no {role} process of {needle}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The files in `dir`, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn executors_and_drivers_run_an_application_binary_uploaded_once() {
    use std::os::unix::fs::PermissionsExt;
    let cluster = Cluster::start();
    // A renamed copy of `ember` serves the executor and driver roles: an
    // application binary as far as the cluster can tell.
    let app = cluster.dir.path().join("packaged-app");
    std::fs::copy(ember(), &app).unwrap();
    let binary = ember_actors::binaries::hash_file(&app).unwrap();
    let sha = binary.sha256();

    // Client mode: uploaded once; both executors' workers fetch it.
    let count = cluster.job(
        "count.sql",
        "SELECT count(*) AS n FROM generate_series(1, 3000);\n",
    );
    let out = cluster
        .ember(&["submit", "--format", "csv", "--total-executor-cores", "2"])
        .args(["--name", "packaged"])
        .arg(&count)
        .env("EMBER_APP_BINARY", &app)
        .bounded_output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "n\n3000\n");
    let uploaded = format!("uploaded {} bytes", binary.bytes());
    assert!(
        text(&out.stderr).contains(&uploaded),
        "{}",
        text(&out.stderr)
    );
    let store = cluster.dir.path().join("cm-state").join("binaries");
    assert_eq!(
        files_in(&store),
        vec![sha.to_string()],
        "nothing but the binary"
    );
    for worker in ["w1", "w2"] {
        let cache = cluster.dir.path().join(worker).join("binaries");
        assert_eq!(files_in(&cache), vec![sha.to_string()], "{worker}'s cache");
        let kept = std::fs::metadata(cache.join(sha)).unwrap();
        assert_eq!(kept.len(), binary.bytes());
        assert_eq!(kept.permissions().mode() & 0o777, 0o755);
        let dir = std::fs::metadata(&cache).unwrap();
        assert_eq!(dir.permissions().mode() & 0o777, 0o700);
    }

    // Cluster mode, submitted again with the same binary: nothing is
    // uploaded, and the driver and its executor run it from their
    // workers' caches.
    let long = cluster.job("long.sql", LONG_JOB);
    let out = cluster
        .ember(&[
            "submit",
            "--deploy-mode",
            "cluster",
            "--name",
            "packaged-cluster",
        ])
        .arg(&long)
        .env("EMBER_APP_BINARY", &app)
        .bounded_output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("held by the cluster manager, nothing uploaded"),
        "{}",
        text(&out.stderr)
    );
    let id = text(&out.stdout).trim().to_string();
    let in_a_cache = |pid: u32| {
        let program = program_of(pid);
        assert!(
            program.starts_with(cluster.dir.path())
                && program.ends_with(Path::new("binaries").join(sha)),
            "{pid} runs {}",
            program.display()
        );
    };
    let drivers = wait_for_processes("driver", &id);
    drivers.iter().for_each(|pid| in_a_cache(*pid));
    let status = cluster.wait_for("its application", Duration::from_secs(30), |s| {
        driver(s, &id).is_some_and(|d| d["app"].is_string())
    });
    let app_id = driver(&status, &id).unwrap()["app"]
        .as_str()
        .unwrap()
        .to_string();
    let executors = wait_for_processes("executor", &app_id);
    executors.iter().for_each(|pid| in_a_cache(*pid));
    assert_eq!(files_in(&store), vec![sha.to_string()]);

    let out = cluster.run(&["kill", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all: Vec<u32> = drivers.into_iter().chain(executors).collect();
    assert!(wait_gone(&all, Duration::from_secs(10)).is_some());
}

#[test]
fn an_application_binary_that_cannot_run_is_refused_with_the_reason() {
    use std::os::unix::fs::PermissionsExt;
    let cluster = Cluster::start_with(&[
        "ember.deploy.maxAppBinaryBytes=1000000",
        "ember.deploy.maxExecutorRetries=2",
    ]);
    let job = cluster.job("one.sql", "SELECT 1 AS one;\n");
    let submit = |binary: &Path, mode: &str| {
        // One executor at a time: each that exits leaves none.
        let out = cluster
            .ember(&["submit", "--deploy-mode", mode, "--name", "refused"])
            .args(["--total-executor-cores", "1"])
            .args(["--conf", "ember.scheduler.noExecutorTimeout=3s"])
            .arg(&job)
            .env("EMBER_APP_BINARY", binary)
            .bounded_output()
            .unwrap();
        (out.status.success(), text(&out.stderr))
    };
    let refused = |binary: &Path, mode: &str, reason: &str| {
        let (ok, stderr) = submit(binary, mode);
        assert!(!ok && stderr.contains(reason), "{mode} mode: {stderr}");
    };
    let write = |name: &str, bytes: &[u8], mode: u32| {
        let path = cluster.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    let script = write("job.sh", b"#!/bin/sh\nexit 0\n", 0o755);
    refused(&script, "client", "is a script (it starts with #!)");
    let text_file = write("notes", b"not a program", 0o755);
    refused(&text_file, "cluster", "is not an ELF executable");
    let plain = write("plain", &std::fs::read("/bin/false").unwrap(), 0o644);
    refused(&plain, "client", "it is not executable (mode 644)");
    // `ember` is far above the manager's limit: refused before a byte goes.
    let large = cluster.dir.path().join("large-app");
    std::fs::copy(ember(), &large).unwrap();
    for mode in ["client", "cluster"] {
        refused(&large, mode, "more than the 1000000 bytes");
        refused(&large, mode, "ember.deploy.maxAppBinaryBytes");
    }
    let store = cluster.dir.path().join("cm-state").join("binaries");
    assert!(files_in(&store).is_empty(), "{:?}", files_in(&store));
    let status = cluster.status();
    assert!(status["apps"].as_array().unwrap().is_empty(), "{status:#}");
    assert!(
        status["drivers"].as_array().unwrap().is_empty(),
        "{status:#}"
    );

    // A program that exits at once is uploaded and fetched, and the
    // application fails saying how its executors ended.
    let crashing = write("crashing", &std::fs::read("/bin/false").unwrap(), 0o755);
    let (ok, stderr) = submit(&crashing, "client");
    assert!(!ok, "{stderr}");
    assert!(
        // It may be gone before its launch spec is written to it.
        stderr.contains("ember.deploy.maxExecutorRetries")
            && (stderr.contains("exited with code 1") || stderr.contains("could not start")),
        "{stderr}"
    );

    // A program that runs but is no Ember application never registers an
    // executor: the application ends when it has waited its bound, saying so.
    let idle = write("idle", &ember_testkit::idle_program(), 0o755);
    let (ok, stderr) = submit(&idle, "client");
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("none registered with this driver") && stderr.contains("ember::App::run"),
        "{stderr}"
    );

    // Only client certificates may upload: a worker's is refused.
    let creds = ember_certs::load_node(&cluster.certs(), "w1").unwrap();
    let addr: std::net::SocketAddr = cluster.manager_addr();
    let refusal = actix::System::new().block_on(async move {
        let bind = "127.0.0.1:0".parse().unwrap();
        let node = ember_transport::Node::start_instance(
            &creds,
            Some("uploader"),
            bind,
            Default::default(),
        )
        .unwrap();
        let manager = ember_actors::cluster_app::reach_manager(&node, addr, "127.0.0.1")
            .await
            .unwrap();
        let outcome = ember_client::upload_binary(&node, &manager.node, &crashing).await;
        node.close(Duration::from_millis(100)).await;
        outcome.unwrap_err().to_string()
    });
    assert!(refusal.contains("refused the upload"), "{refusal}");
}
