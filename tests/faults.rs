//! Jobs that meet faults on a cluster of real processes: an executor killed
//! mid-stage, shuffle output that disappears, tasks that fail, output
//! written exactly once. Faults come from signals sent to real PIDs and
//! from the `ember.faults.*` keys executors honour.

use ember_testkit::{BoundedChild, BoundedCommand};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ember_testkit::{self as loopback, processes, signal, wait_gone};

use crate::cluster::Cluster;
use crate::support::{local_rows, plain, text};

const VIEWS_DDL: &str = "CREATE EXTERNAL TABLE views (
  event_time TIMESTAMP NOT NULL, user_id BIGINT NOT NULL, video_id BIGINT NOT NULL,
  watch_seconds BIGINT NOT NULL, country VARCHAR NOT NULL)
STORED AS CSV LOCATION 'examples/data/views/' OPTIONS ('format.has_header' 'true');
";

/// The watch-time query: stage 0 scans and pre-aggregates, stage 1
/// aggregates and sorts, stage 2 merges (as EXPLAIN shows).
const WATCH_TIME: &str = "SELECT video_id, SUM(watch_seconds) / 60.0 AS minutes, COUNT(*) AS views
FROM views GROUP BY video_id ORDER BY minutes DESC, video_id LIMIT 20;
";

/// `ember submit` of `job` in client mode on both workers with `conf`, at
/// info level.
fn submit_command(cluster: &Cluster, name: &str, job: &Path, conf: &[&str]) -> Command {
    let mut command = cluster.ember(&[
        "submit",
        "--format",
        "csv",
        "--total-executor-cores",
        "2",
        "--name",
        name,
        "-v",
    ]);
    for c in conf {
        command.args(["--conf", c]);
    }
    command.arg(job);
    command
}

/// Runs `submit_command` to its end.
fn submit(cluster: &Cluster, name: &str, job: &Path, conf: &[&str]) -> Output {
    submit_command(cluster, name, job, conf)
        .bounded_output()
        .unwrap()
}

#[test]
fn an_executor_killed_mid_stage_does_not_change_the_answer() {
    let cluster = Cluster::start();
    let job = cluster.job("watch.sql", &format!("{VIEWS_DDL}{WATCH_TIME}"));
    let expected = local_rows(&job);

    // Every first attempt of stage 0 waits 3 s: time to kill an executor
    // while it holds a task.
    let mut submit = submit_command(
        &cluster,
        "killed-executor",
        &job,
        &["ember.faults.delayTask=0.*:3s"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let status = cluster.wait_for("two executors", Duration::from_secs(20), |s| {
        loopback::app(s, "killed-executor")
            .is_some_and(|a| a["executors"].as_array().is_some_and(|e| e.len() == 2))
    });
    let (_, pids) = crate::cluster::two_executor_processes(&status, "killed-executor");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        submit.try_wait().unwrap().is_none(),
        "the job must still be running when its executor is killed"
    );
    signal(pids[0], libc::SIGKILL);

    let out = submit.bounded_wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), expected);
    // The manager replaced the killed executor.
    let status = cluster.wait_for("the app to finish", Duration::from_secs(10), |s| {
        loopback::app(s, "killed-executor").is_some_and(|a| a["state"] == "FINISHED")
    });
    assert!(
        status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["cores_used"] == 0)
    );
}

#[test]
fn a_lost_shuffle_block_reruns_only_its_map_task_then_the_reader() {
    let cluster = Cluster::start();
    let job = cluster.job("watch.sql", &format!("{VIEWS_DDL}{WATCH_TIME}"));
    let expected = local_rows(&job);

    // The blocks map task 1 of stage 0 wrote vanish once written.
    let out = submit(
        &cluster,
        "lost-block",
        &job,
        &["ember.faults.loseMapOutput=0.1"],
    );
    let log = plain(&text(&out.stderr));
    assert!(out.status.success(), "{log}");
    assert_eq!(text(&out.stdout), expected);
    assert!(log.contains("fetch failed"), "{log}");
    // Stage 0 ran again for its one lost partition, then stage 1 again.
    assert!(
        log.lines()
            .any(|l| l.contains("stage submitted") && l.contains("stage=0 tasks=1")),
        "{log}"
    );
    let submissions = log
        .lines()
        .filter(|l| l.contains("stage submitted") && l.contains("stage=1"))
        .count();
    assert!(submissions >= 2, "{log}");
}

#[test]
fn a_task_that_keeps_failing_fails_the_job_with_its_own_error_and_one_that_recovers_does_not() {
    let cluster = Cluster::start();
    // One file of the table holds a value that is not a number.
    let data = cluster.dir.path().join("numbers");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.csv"), "n\n1\n2\n3\n").unwrap();
    std::fs::write(data.join("b.csv"), "n\n4\nfive\n6\n").unwrap();
    let job = cluster.job(
        "numbers.sql",
        &format!(
            "CREATE EXTERNAL TABLE numbers (n BIGINT NOT NULL) STORED AS CSV LOCATION '{}/' \
             OPTIONS ('format.has_header' 'true');\nSELECT n % 2 AS odd, SUM(n) AS total FROM numbers GROUP BY n % 2 ORDER BY odd;\n",
            data.display()
        ),
    );
    let out = submit(&cluster, "always-fails", &job, &[]);
    let log = plain(&text(&out.stderr));
    assert!(!out.status.success());
    assert!(log.contains("failed 4 times"), "{log}");
    assert!(log.contains("five"), "the task's own error: {log}");
    let status = cluster.wait_for("the failed app to end", Duration::from_secs(10), |s| {
        loopback::app(s, "always-fails").is_some_and(|a| a["state"] == "FAILED")
    });
    let app = loopback::app(&status, "always-fails").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(wait_gone(&processes("executor", &app), Duration::from_secs(10)).is_some());

    // Twice injected, then the third attempt succeeds.
    std::fs::write(data.join("b.csv"), "n\n4\n5\n6\n").unwrap();
    let out = submit(&cluster, "recovers", &job, &["ember.faults.failTask=1.0:2"]);
    let log = plain(&text(&out.stderr));
    assert!(out.status.success(), "{log}");
    assert_eq!(text(&out.stdout), "odd,total\n0,12\n1,9\n");
    assert_eq!(log.matches("injected failure").count(), 2, "{log}");
}

/// Every CSV row under `dir` but headers, sorted.
fn rows_under(dir: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "csv") {
                let body = std::fs::read_to_string(&path).unwrap();
                rows.extend(body.lines().skip(1).map(str::to_string));
            }
        }
    }
    rows.sort();
    rows
}

#[test]
fn copy_writes_every_row_once_despite_retries_and_nothing_when_killed() {
    let cluster = Cluster::start();
    let out_dir = cluster.dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let copy = |dest: &Path| {
        format!(
            "{VIEWS_DDL}COPY (SELECT video_id, COUNT(*) AS views FROM views GROUP BY video_id) \
             TO '{}/' STORED AS CSV OPTIONS ('format.has_header' 'true');\n",
            dest.display()
        )
    };
    let expected = {
        let job = cluster.job(
            "count.sql",
            &format!(
                "{VIEWS_DDL}SELECT video_id, COUNT(*) AS views FROM views GROUP BY video_id;\n"
            ),
        );
        let mut rows: Vec<String> = local_rows(&job)
            .lines()
            .skip(1)
            .map(str::to_string)
            .collect();
        rows.sort();
        rows
    };

    // The writing task's first attempt fails after writing its files.
    let retried = out_dir.join("retried");
    let job = cluster.job("copy.sql", &copy(&retried));
    let out = submit(
        &cluster,
        "copy-retried",
        &job,
        &["ember.faults.failTask=2.0:1"],
    );
    let log = plain(&text(&out.stderr));
    assert!(out.status.success(), "{log}");
    assert!(log.contains("injected failure"), "{log}");
    let written = rows_under(&retried);
    assert_eq!(written.len(), expected.len(), "every row exactly once");
    assert!(written == expected, "the rows written are the query's");
    assert!(retried.join("_SUCCESS").exists());

    // A job interrupted while it runs leaves nothing behind.
    let killed = out_dir.join("killed");
    let job = cluster.job("copy-killed.sql", &copy(&killed));
    let mut submit = submit_command(
        &cluster,
        "copy-killed",
        &job,
        &["ember.faults.delayTask=2.*:30s"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    cluster.wait_for("the copy to run", Duration::from_secs(20), |s| {
        loopback::app(s, "copy-killed").is_some_and(|a| a["state"] == "RUNNING")
    });
    std::thread::sleep(Duration::from_millis(2000));
    signal(submit.id(), libc::SIGINT);
    let code = submit.wait_within(Duration::from_secs(30)).unwrap();
    assert_eq!(code.code(), Some(130));
    assert!(!killed.exists(), "no destination after a killed job");
    let left: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        vec!["retried".to_string()],
        "no staging left: {left:?}"
    );
}

#[test]
fn a_straggler_is_speculated_and_the_answer_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("watch.sql");
    std::fs::write(&job, format!("{VIEWS_DDL}{WATCH_TIME}")).unwrap();
    let expected = local_rows(&job);
    // Task 1 of stage 0 would take 20 s; its copy takes milliseconds.
    let out = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["submit", "--master", "local[3]", "--format", "csv", "-v"])
        .args(["--conf", "ember.speculation=true"])
        .args(["--conf", "ember.faults.delayTask=0.1:20s"])
        .arg(&job)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .bounded_output()
        .unwrap();
    let log = plain(&text(&out.stderr));
    assert!(out.status.success(), "{log}");
    assert_eq!(text(&out.stdout), expected);
    assert!(log.contains("speculating a slow task"), "{log}");
}

#[test]
fn ember_kill_cancels_a_client_mode_job_and_releases_its_executors() {
    let cluster = Cluster::start();
    let (mut submit, app, pids) = crate::cluster::long_client_job(&cluster, "killed-app");
    // Its one task starts once both executors have joined the driver.
    std::thread::sleep(Duration::from_millis(500));
    let out = cluster.run(&["kill", &app]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        wait_gone(&pids, Duration::from_secs(10)).is_some(),
        "executors of {app} outlived `ember kill`"
    );
    let code = submit.wait_within(Duration::from_secs(30)).unwrap();
    assert!(!code.success(), "a killed job does not succeed");
    cluster.wait_for("every core back", Duration::from_secs(10), |s| {
        s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["cores_used"] == 0)
    });
}
