//! Clusters of real processes on loopback: a cluster manager, two workers
//! (each running its executors and drivers as child processes) and `ember`
//! commands as a user runs them. Executor processes are found by PID, from
//! /proc, so "no executor left behind" is checked against the OS itself.

use std::io::Read;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ember::loopback::{self, LoopbackCluster, driver, processes, signal, wait_gone};
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
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let inner = LoopbackCluster::start(ember(), 2, &["ember.deploy.recoveryTimeout=2s"]);
        Cluster { inner, _turn: turn }
    }

    /// An `ember` command with this cluster's master and certificates.
    pub fn ember(&self, args: &[&str]) -> Command {
        let mut command = self.inner.ember(args);
        command.current_dir(env!("CARGO_MANIFEST_DIR"));
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.ember(args).output().unwrap()
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
        let out = command.arg(job).output().unwrap();
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
    // row counts across the plan codec.
    let count = cluster.job(
        "count.sql",
        "SELECT count(*) AS n FROM generate_series(1, 3000);\n",
    );
    let out = cluster.run(&["submit", "--format", "csv", count.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "n\n3000\n");
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
            .output()
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
        let out = child.wait_with_output().unwrap();
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
    let code = submit.wait().unwrap();
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
        .output()
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
    let job = cluster.job(
        "flaky.sql",
        &format!(
            "CREATE EXTERNAL TABLE numbers (x BIGINT) STORED AS CSV LOCATION '{}' \
             OPTIONS ('format.has_header' 'true');\nSELECT sum(x) AS total FROM numbers;\n",
            data.display()
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
    assert_eq!(text(&logs.stdout), "total\n42\n");
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
        .output()
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

    // A worker holding a client's certificate is refused at once.
    let out = Command::new(ember())
        .args([
            "--role",
            "worker",
            "--cluster-manager",
            cluster.master.trim_start_matches("ember://"),
        ])
        .args(["--name", ember::loopback::CLIENT])
        .arg("--certs")
        .arg(cluster.certs())
        .output()
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
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is a file, not a directory"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_lost_worker_takes_its_executors_and_its_supervised_driver_moves() {
    let mut cluster = Cluster::start();
    let long = cluster.job("long.sql", LONG_JOB);
    let id = cluster.submit_cluster_mode("moving", &long, true);
    let status = cluster.wait_for("the driver to run", Duration::from_secs(20), |s| {
        driver(s, &id).is_some_and(|d| d["state"] == "RUNNING")
            && loopback::app(s, "moving").is_some_and(|a| a["state"] == "RUNNING")
    });
    let first_home = driver(&status, &id).unwrap()["worker"]
        .as_str()
        .unwrap()
        .to_string();
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
    let status = cluster.wait_for("the driver to move", Duration::from_secs(20), |s| {
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
