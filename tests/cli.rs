//! The `ember` binary as a user runs it: exit codes, what it prints, what it
//! leaves on disk.

use ember_testkit::{BoundedChild, BoundedCommand};
use std::path::Path;
use std::process::{Command, Output};

use crate::support::{Data, files_under, text};

/// Runs `ember` with `args` in `dir`, without the caller's `RUST_LOG`.
pub(crate) fn ember(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .bounded_output()
        .unwrap()
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `ember submit JOB` with `input` written to its standard input.
fn submit_piped(job: &str, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["submit", "--format", "csv", job])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.bounded_wait_with_output().unwrap()
}

/// A script piped in (`-`, or a pipe's path such as `/dev/stdin`) runs
/// whole: its first bytes are not taken to check for a binary. Binary
/// bytes through a pipe are refused with what to do.
#[test]
fn a_script_piped_to_submit_runs_whole() {
    for job in ["-", "/dev/stdin"] {
        let out = submit_piped(job, b"SELECT 1 AS one;\nSELECT 'two' AS two;\n");
        assert!(out.status.success(), "{job}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "one\n1\ntwo\ntwo\n", "{job}");
    }
    let binary = std::fs::read(env!("CARGO_BIN_EXE_ember")).unwrap();
    let out = submit_piped("-", &binary[..4096]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("an application binary is submitted from a file, not a pipe"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_example_job_prints_top_videos_and_writes_its_table() {
    let work = tempfile::tempdir().unwrap();
    let examples = repo().join("examples");
    // Run from a scratch directory holding the examples, as a user's checkout.
    std::os::unix::fs::symlink(&examples, work.path().join("examples")).unwrap();
    let out = ember(
        &[
            "submit",
            "--master",
            "local[3]",
            "--format",
            "csv",
            "examples/watch_time.sql",
        ],
        work.path(),
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "video_id,minutes,views");
    // Ten top videos, then COPY's count of rows written.
    assert_eq!(lines[11], "count");
    let written: usize = lines[12].parse().unwrap();
    assert!(written > 100, "{written}");
    let minutes: Vec<f64> = lines[1..11]
        .iter()
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(
        minutes.windows(2).all(|w| w[0] >= w[1]),
        "sorted by minutes: {minutes:?}"
    );
    let table = work
        .path()
        .join("target/ember-output/watch_time_per_video.parquet");
    assert!(table.is_file(), "the COPY output exists");
    // Not a terminal: no progress bars, and logs are quiet by default.
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn the_same_job_gives_the_same_rows_on_every_master() {
    let data = Data::new(3_000, 3);
    let job = data.path("job.sql");
    let mut script = data.ddl().join(";\n");
    script.push_str(";\nSELECT country, COUNT(*) AS n, SUM(watch_seconds) AS s FROM views GROUP BY country ORDER BY country;\n");
    std::fs::write(&job, script).unwrap();
    let job = job.to_str().unwrap();
    let run = |master: &str, format: &str| {
        let out = ember(
            &["submit", "--master", master, "--format", format, job],
            data.dir.path(),
        );
        assert!(out.status.success(), "{master}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let reference = run("local", "csv");
    assert_eq!(
        reference.lines().count(),
        21,
        "header and 20 countries: {reference}"
    );
    assert_eq!(run("local[2]", "csv"), reference);
    assert_eq!(run("local[3,2]", "csv"), reference);
    let json = run("local[2]", "json");
    assert_eq!(json.lines().count(), 20);
    assert!(
        json.lines().all(|l| l.starts_with("{\"country\":")),
        "{json}"
    );
    let table = run("local[2]", "table");
    assert!(table.starts_with("+---------+"), "{table}");
}

#[test]
fn explain_prints_stages_without_running_them() {
    let out = ember(
        &[
            "submit",
            "--explain",
            "--master",
            "local[2]",
            "examples/watch_time.sql",
        ],
        repo(),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("Stage 0 (shuffle map, 2 tasks)"),
        "{stdout}"
    );
    assert!(stdout.contains("ShuffleReaderExec: stage=0"), "{stdout}");
    assert!(
        stdout.contains("DataSinkExec"),
        "COPY is explained too: {stdout}"
    );
}

#[test]
fn bad_master_urls_list_the_accepted_forms() {
    let out = ember(
        &["submit", "--master", "local[0]", "examples/watch_time.sql"],
        repo(),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("invalid master URL 'local[0]'"), "{stderr}");
    assert!(stderr.contains("local[N,F]"), "{stderr}");
}

#[test]
fn a_missing_job_file_is_named() {
    let out = ember(&["submit", "no/such/job.sql"], repo());
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot read job file no/such/job.sql"),
        "{stderr}"
    );
}

#[test]
fn a_failing_statement_is_named_by_file_line_and_text_and_stops_the_job() {
    let data = Data::new(100, 1);
    let job = data.path("bad.sql");
    let mut script = data.ddl().join(";\n");
    script.push_str(";\n\n-- a typo in a column name\nSELECT video_idd, COUNT(*)\nFROM views GROUP BY 1;\nSELECT 'never printed';\n");
    std::fs::write(&job, &script).unwrap();
    let out = ember(
        &["submit", "--master", "local[2]", job.to_str().unwrap()],
        data.dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let line = script
        .lines()
        .position(|l| l.starts_with("SELECT video_idd"))
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!(
            "bad.sql:{line}: statement 3 (SELECT video_idd, COUNT(*)) failed"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("video_idd"), "{stderr}");
    assert!(!text(&out.stdout).contains("never printed"));
}

#[test]
fn a_bad_csv_row_fails_the_job_and_copy_writes_nothing() {
    let data = Data::new(400, 2);
    let bad = data.path("views").join("part-00000.csv");
    let mut rows = std::fs::read_to_string(&bad).unwrap();
    rows.push_str("2026-11-01T10:00:00Z,17,12,thirty,US\n");
    std::fs::write(&bad, rows).unwrap();
    let job = data.path("copy.sql");
    let mut script = data.ddl().join(";\n");
    script.push_str(";\nCOPY (SELECT video_id, SUM(watch_seconds) FROM views GROUP BY video_id) TO 'out/' STORED AS PARQUET;\n");
    std::fs::write(&job, script).unwrap();
    let out = ember(
        &["submit", "--master", "local[2]", job.to_str().unwrap()],
        data.dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("thirty"), "{stderr}");
    assert!(stderr.contains("statement 3 (COPY"), "{stderr}");
    assert!(files_under(&data.path("out")).is_empty());
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The error names the file, once: no warning repeats it.
    let named = format!("{}: ", bad.display());
    assert_eq!(stderr.matches(&named).count(), 1, "{stderr}");
    assert!(!stderr.contains("WARN"), "{stderr}");
}

#[test]
fn cluster_roles_explain_what_they_are_missing() {
    // Executors and drivers are started by a worker, with a spec on stdin.
    for role in ["driver", "executor"] {
        let out = ember(&["--role", role], repo());
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("started by a worker"),
            "{role}: {}",
            text(&out.stderr)
        );
    }
    let out = ember(&["--role", "worker"], repo());
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("needs --cluster-manager"));
    let out = ember(
        &["--role", "cluster-manager", "--certs", "no/such/certs"],
        repo(),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no/such/certs"),
        "{}",
        text(&out.stderr)
    );
    let out = ember(
        &[
            "submit",
            "--deploy-mode",
            "cluster",
            "examples/watch_time.sql",
        ],
        repo(),
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cluster master"));
    let out = ember(&["status", "--master", "local[2]"], repo());
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("ember://HOST:PORT"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn gen_writes_the_requested_rows_and_conf_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let out = ember(
        &[
            "gen", "views", "--rows", "1234", "--files", "2", "--out", "v",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: usize = files_under(&dir.path().join("v"))
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap().lines().count() - 1)
        .sum();
    assert_eq!(rows, 1234);

    let out = ember(
        &[
            "submit",
            "--conf",
            "ember.task.maxfailures=2",
            "examples/watch_time.sql",
        ],
        repo(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("did you mean 'ember.task.maxFailures'"));
    let out = ember(&["config", "--list"], repo());
    assert!(text(&out.stdout).contains("ember.sql.shuffle.partitions"));
}

#[test]
fn certs_init_issue_and_show() {
    let dir = tempfile::tempdir().unwrap();
    let out = ember(&["certs", "init", "--dir", "pki"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again = ember(&["certs", "init", "--dir", "pki"], dir.path());
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("--force"),
        "{}",
        text(&again.stderr)
    );
    let out = ember(
        &[
            "certs", "issue", "--dir", "pki", "--role", "worker", "--name", "w1", "--host",
            "10.0.0.7", "--host", "w1.lan", "--days", "30",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = ember(&["certs", "show", "pki/w1.pem"], dir.path());
    let stdout = text(&shown.stdout);
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    assert!(stdout.contains("role:       worker"), "{stdout}");
    assert!(stdout.contains("w1.lan, 10.0.0.7"), "{stdout}");
    assert!(stdout.contains("CN=w1"), "{stdout}");
    let bad_role = ember(
        &[
            "certs", "issue", "--dir", "pki", "--role", "admin", "--name", "x",
        ],
        dir.path(),
    );
    assert_eq!(bad_role.status.code(), Some(2));
    assert!(
        text(&bad_role.stderr).contains("unknown role 'admin'"),
        "{}",
        text(&bad_role.stderr)
    );
    let missing = ember(&["certs", "show", "pki/none.pem"], dir.path());
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("pki/none.pem"));
}

#[test]
fn certificates_valid_for_no_days_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let init = ember(
        &["certs", "init", "--dir", "pki", "--days", "0"],
        dir.path(),
    );
    assert_eq!(init.status.code(), Some(2));
    assert!(
        text(&init.stderr).contains("a certificate must be valid for at least 1 day"),
        "{}",
        text(&init.stderr)
    );
    assert!(!dir.path().join("pki").exists(), "no CA was made");
    let out = ember(&["certs", "init", "--dir", "pki"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    for days in ["0", "36501"] {
        let issue = ember(
            &[
                "certs", "issue", "--dir", "pki", "--role", "worker", "--name", "w1", "--days",
                days,
            ],
            dir.path(),
        );
        assert_eq!(issue.status.code(), Some(2), "--days {days}");
        assert!(
            text(&issue.stderr).contains(&format!("invalid value '{days}' for '--days <DAYS>'")),
            "{}",
            text(&issue.stderr)
        );
        assert!(!dir.path().join("pki/w1.pem").exists(), "--days {days}");
    }
    let zero = ember(
        &[
            "certs", "issue", "--dir", "pki", "--role", "worker", "--name", "w1", "--days", "0",
        ],
        dir.path(),
    );
    assert!(
        text(&zero.stderr).contains("would be expired as soon as it is issued"),
        "{}",
        text(&zero.stderr)
    );
}

#[test]
fn logs_piped_to_a_file_carry_no_colour_codes() {
    let work = tempfile::tempdir().unwrap();
    let job = work.path().join("one.sql");
    std::fs::write(&job, "SELECT 1 AS one;\n").unwrap();
    let out = ember(
        &[
            "submit",
            "-v",
            "--master",
            "local[2]",
            job.to_str().unwrap(),
        ],
        work.path(),
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("INFO"), "-v logs at info: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "no escape codes: {stderr:?}");
}

#[test]
fn json_rows_name_every_column_and_count_star_counts() {
    let work = tempfile::tempdir().unwrap();
    let job = work.path().join("nulls.sql");
    std::fs::write(
        &job,
        "SELECT v AS id, CASE WHEN v % 2 = 0 THEN 'even' END AS kind \
         FROM generate_series(1, 2) AS t(v) ORDER BY id;\n\
         SELECT count(*) AS n FROM generate_series(1, 3000);\n",
    )
    .unwrap();
    let out = ember(
        &[
            "submit",
            "--master",
            "local[3]",
            "--format",
            "json",
            job.to_str().unwrap(),
        ],
        work.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "{\"id\":1,\"kind\":null}\n{\"id\":2,\"kind\":\"even\"}\n{\"n\":3000}\n"
    );
}

#[test]
fn nulls_empty_strings_and_nested_values_print_in_every_format() {
    let work = tempfile::tempdir().unwrap();
    let job = work.path().join("values.sql");
    std::fs::write(
        &job,
        "SELECT v AS id, CASE WHEN v = 1 THEN 'a' WHEN v = 2 THEN '' WHEN v = 4 THEN 'NULL' END AS word \
         FROM generate_series(1, 4) AS t(v) ORDER BY id;\n\
         SELECT max(v) AS top FROM generate_series(1, 3) AS t(v) WHERE v > 5;\n\
         SELECT named_struct('a', 1, 'b', 'x') AS s, make_array(1, 2) AS l;\n",
    )
    .unwrap();
    let run = |format: &str| {
        let out = ember(
            &[
                "submit",
                "--master",
                "local[2]",
                "--format",
                format,
                job.to_str().unwrap(),
            ],
            work.path(),
        );
        assert!(out.status.success(), "{format}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    // NULL as NULL; an empty string, and a string that reads NULL, quoted.
    assert_eq!(
        run("csv"),
        "id,word\n1,a\n2,\"\"\n3,NULL\n4,\"NULL\"\n\
         top\nNULL\n\
         s,l\n\"{\"\"a\"\":1,\"\"b\"\":\"\"x\"\"}\",\"[1,2]\"\n"
    );
    let table = run("table");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["id", "word"],
            vec!["1", "a"],
            vec!["2", ""],
            vec!["3", "NULL"],
            vec!["4", "NULL"],
            vec!["top"],
            vec!["NULL"],
            vec!["s", "l"],
            vec!["{a: 1, b: x}", "[1, 2]"],
        ],
        "{table}"
    );
    assert_eq!(
        run("json"),
        "{\"id\":1,\"word\":\"a\"}\n{\"id\":2,\"word\":\"\"}\n{\"id\":3,\"word\":null}\n\
         {\"id\":4,\"word\":\"NULL\"}\n{\"top\":null}\n\
         {\"s\":{\"a\":1,\"b\":\"x\"},\"l\":[1,2]}\n"
    );
}

/// Runs `ember args` with standard output and error going into a pipe
/// nobody reads any more, as `| head` leaves it; its exit code.
fn ember_into_a_closed_pipe(args: &[&str], dir: &Path) -> Option<i32> {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .status()
        .unwrap()
        .code()
}

#[test]
fn a_closed_pipe_ends_commands_quietly_not_with_a_panic() {
    let work = tempfile::tempdir().unwrap();
    // Output nobody reads: the command still succeeds.
    assert_eq!(
        ember_into_a_closed_pipe(&["config", "--list"], work.path()),
        Some(0)
    );
    let job = work.path().join("rows.sql");
    std::fs::write(&job, "SELECT v FROM generate_series(1, 100) AS t(v);\n").unwrap();
    let submit = [
        "submit",
        "-v",
        "--master",
        "local[2]",
        job.to_str().unwrap(),
    ];
    assert_eq!(ember_into_a_closed_pipe(&submit, work.path()), Some(0));
    // An error nobody reads: the command still fails with its own code.
    let logs = [
        "logs",
        "driver-20261101000000-0000",
        "--master",
        "ember://127.0.0.1:9",
        "--certs",
        "no-such-dir",
    ];
    assert_eq!(ember_into_a_closed_pipe(&logs, work.path()), Some(1));
    std::fs::write(&job, "SELECT nope;\n").unwrap();
    assert_eq!(ember_into_a_closed_pipe(&submit, work.path()), Some(1));
}

/// A child process stopped (SIGTERM, then reaped) when dropped, so a
/// failing test leaves nothing running.
struct StopOnDrop(std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        ember_testkit::signal(self.0.id(), libc::SIGTERM);
        let _ = self.0.wait_within(std::time::Duration::from_secs(10));
    }
}

#[test]
fn log_files_carry_no_colour_codes() {
    use std::io::BufRead;
    let _turn = crate::cluster::ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("cluster");
    let mut cluster = StopOnDrop(
        Command::new(env!("CARGO_BIN_EXE_ember"))
            .args(["local-cluster", "--workers", "1", "--port", "0", "--dir"])
            .arg(&dir)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // "master URL" comes once the worker has registered.
    let mut line = String::new();
    std::io::BufReader::new(cluster.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("master ember://"), "{line:?}");
    drop(cluster);
    for log in ["cluster-manager.log", "worker-1.log"] {
        let written = std::fs::read_to_string(dir.join("logs").join(log)).unwrap();
        assert!(written.contains(" INFO "), "{log}: {written}");
        assert!(!written.contains("\u{1b}["), "{log}: {written:?}");
    }
}

/// How many tasks each stage of a `-v` run was submitted with.
fn stage_tasks(log: &str) -> Vec<usize> {
    log.lines()
        .filter(|l| l.contains("stage submitted"))
        .filter_map(|l| l.split("tasks=").nth(1))
        .filter_map(|t| t.trim().parse().ok())
        .collect()
}

#[test]
fn small_reduce_partitions_are_coalesced_once_the_map_stage_ran() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("group.sql");
    std::fs::write(
        &job,
        "SELECT value % 7 AS k, count(*) AS n FROM generate_series(1, 100000) GROUP BY k ORDER BY k;\n",
    )
    .unwrap();
    let expected: String = std::iter::once("k,n\n".to_string())
        .chain((0..7).map(|k| {
            let n = (1..=100_000u64).filter(|v| v % 7 == k).count();
            format!("{k},{n}\n")
        }))
        .collect();
    let run = |coalesce: &str| {
        let out = ember(
            &[
                "submit",
                "-v",
                "--master",
                "local[2]",
                "--format",
                "csv",
                "--conf",
                "ember.sql.shuffle.partitions=50",
                "--conf",
                &format!("ember.sql.adaptive.coalescePartitions.enabled={coalesce}"),
                job.to_str().unwrap(),
            ],
            dir.path(),
        );
        let log = text(&out.stderr);
        assert!(out.status.success(), "{log}");
        assert_eq!(text(&out.stdout), expected, "with coalescing {coalesce}");
        stage_tasks(&log)
    };
    // The aggregation reads the 50 partitions of a few rows each.
    let planned = run("false");
    assert!(planned.contains(&50), "{planned:?}");
    let coalesced = run("true");
    assert_eq!(coalesced.len(), planned.len(), "{coalesced:?}");
    assert!(!coalesced.contains(&50), "{coalesced:?}");
    assert!(
        coalesced.iter().all(|&t| (1..=2).contains(&t)),
        "{coalesced:?}"
    );
}
