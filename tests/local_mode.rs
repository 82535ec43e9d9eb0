//! Local mode through the session API: results match plain DataFusion, tasks
//! are retried and fail jobs with their own error, executors share their
//! driver's fate, bad input is reported without leaving output behind, and
//! file output is committed once, or not at all.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::DataFusionError;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use ember::{SessionError, StatementOutcome};
use ember_actors::driver::{ExecutorState, ListExecutors, StopDriver};
use ember_actors::executor::ExecutorMessage;

use crate::support::{Data, files_under, reference_rows, rows, session, sorted};

/// Queries covering aggregate, join, sort+limit, filter, union, window and
/// distinct; `true` when the order of rows is fully defined by the query.
const QUERIES: &[(&str, bool)] = &[
    (
        "SELECT video_id, SUM(watch_seconds) / 60.0 AS minutes, COUNT(*) AS views FROM views GROUP BY video_id",
        false,
    ),
    (
        "SELECT v.category, COUNT(*) AS views, SUM(w.watch_seconds) AS seconds FROM views w JOIN videos v ON w.video_id = v.video_id GROUP BY v.category",
        false,
    ),
    (
        "SELECT video_id, user_id, watch_seconds FROM views ORDER BY watch_seconds DESC, video_id, user_id, event_time LIMIT 25",
        true,
    ),
    (
        "SELECT event_time, user_id, video_id FROM views WHERE country = 'BR' AND watch_seconds > 900",
        false,
    ),
    (
        "SELECT video_id FROM views WHERE country = 'US' UNION ALL SELECT video_id FROM videos WHERE category = 'news'",
        false,
    ),
    (
        "SELECT country, COUNT(DISTINCT user_id) AS viewers, MAX(watch_seconds) AS longest FROM views GROUP BY country ORDER BY country",
        true,
    ),
    (
        "SELECT country, video_id, RANK() OVER (PARTITION BY country ORDER BY SUM(watch_seconds) DESC, video_id) AS r FROM views GROUP BY country, video_id",
        false,
    ),
    (
        "SELECT w.video_id, v.title FROM (SELECT DISTINCT video_id FROM views) w LEFT JOIN videos v ON w.video_id = v.video_id",
        false,
    ),
];

#[actix::test]
async fn results_equal_plain_datafusion_in_every_local_mode() {
    let data = Data::new(6_000, 3);
    for master in ["local", "local[2]", "local[3]"] {
        let mut s = session(master, &data).await;
        for (sql, ordered) in QUERIES {
            let expected = reference_rows(&data, sql).await;
            let got = rows(&mut s, sql).await;
            assert!(!expected.is_empty(), "{sql}: the reference has rows");
            if *ordered {
                assert_eq!(got, expected, "{master}: {sql}");
            } else {
                assert_eq!(sorted(got), sorted(expected), "{master}: {sql}");
            }
        }
        // Executors drop a job's blocks right after it ends.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while s.local().unwrap().shuffle_blocks() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            s.local().unwrap().shuffle_blocks(),
            0,
            "{master}: shuffle blocks are dropped after each job"
        );
        assert!(s.stop().await, "{master}: executors stop with the driver");
    }
}

#[actix::test]
async fn explain_shows_the_stage_graph() {
    let data = Data::new(500, 2);
    let mut s = session("local[2]", &data).await;
    let StatementOutcome::Explain(text) = s
        .execute("EXPLAIN SELECT video_id, COUNT(*) FROM views GROUP BY video_id ORDER BY 2 DESC LIMIT 3")
        .await
        .unwrap()
    else {
        panic!("EXPLAIN returns the stage graph");
    };
    assert!(text.contains("Stage 0 (shuffle map, 2 tasks)"), "{text}");
    assert!(
        text.contains("ShuffleWriterExec: stage=0, partitioning=Hash([video_id@0], 2)"),
        "{text}"
    );
    assert!(text.contains("(result, 1 task, reads stage 1)"), "{text}");
    s.stop().await;
}

/// A UDF that fails (or panics) on its first `failures` calls, then returns
/// its argument; `calls` counts every call.
fn flaky_udf(
    name: &str,
    failures: usize,
    panics: bool,
    calls: Arc<AtomicUsize>,
) -> datafusion::logical_expr::ScalarUDF {
    create_udf(
        name,
        vec![DataType::Int64],
        DataType::Int64,
        Volatility::Volatile,
        Arc::new(move |args: &[ColumnarValue]| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n < failures {
                if panics {
                    panic!("flaky udf panicked on call {n}");
                }
                return Err(DataFusionError::Execution(format!(
                    "flaky udf failed on call {n}"
                )));
            }
            Ok(args[0].clone())
        }),
    )
}

#[actix::test]
async fn a_failing_task_is_retried_then_fails_the_job_with_its_error() {
    // One small file: one map task, so every call is one attempt.
    let data = Data::new(200, 1);
    let calls = Arc::new(AtomicUsize::new(0));
    let mut s = session("local[2,3]", &data).await;
    s.context()
        .register_udf(flaky_udf("always_fails", usize::MAX, false, calls.clone()));
    let err = s
        .execute("SELECT country, SUM(always_fails(watch_seconds)) FROM views GROUP BY country")
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, SessionError::Job(_)), "{message}");
    assert!(message.contains("failed 3 times"), "{message}");
    assert!(
        message.contains("flaky udf failed on call 2"),
        "the most recent attempt's error: {message}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "exactly local[2,3]'s three attempts"
    );

    // Fails twice, then succeeds: the job succeeds with the right answer.
    let calls = Arc::new(AtomicUsize::new(0));
    s.context()
        .register_udf(flaky_udf("fails_twice", 2, false, calls.clone()));
    let got = rows(&mut s, "SELECT SUM(fails_twice(watch_seconds)) FROM views").await;
    let expected = reference_rows(&data, "SELECT SUM(watch_seconds) FROM views").await;
    assert_eq!(got, expected);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    s.stop().await;
}

#[actix::test]
async fn a_panicking_task_fails_its_job_but_not_its_executor() {
    let data = Data::new(200, 1);
    let mut s = session("local[2]", &data).await;
    s.context()
        .register_udf(flaky_udf("panics", usize::MAX, true, Arc::default()));
    let message = s
        .execute("SELECT SUM(panics(watch_seconds)) FROM views")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("task panicked: flaky udf panicked"),
        "{message}"
    );
    assert!(
        s.local().unwrap().executors().iter().all(|e| e.connected()),
        "executors survive a task panic"
    );
    let got = rows(&mut s, "SELECT COUNT(*) FROM views").await;
    assert_eq!(got, vec!["200".to_string()]);
    s.stop().await;
}

#[actix::test]
async fn stopping_the_driver_stops_every_executor() {
    let data = Data::new(200, 2);
    let s = session("local[4]", &data).await;
    let executors = s.local().unwrap().executors();
    assert_eq!(executors.len(), 3, "local[4]: three executor threads");
    let driver = s.local().unwrap().driver().clone();
    driver.send(StopDriver).await.unwrap();
    // The link: every executor stops on its own, without being told.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while executors.iter().any(|e| e.connected()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        executors.iter().all(|e| !e.connected()),
        "no executor outlives its driver"
    );
    drop(s);
}

#[actix::test]
async fn a_job_running_when_the_driver_stops_fails_and_its_executors_stop() {
    let data = Data::new(20_000, 4);
    let mut s = session("local[3]", &data).await;
    let driver = s.local().unwrap().driver().clone();
    let executors = s.local().unwrap().executors();
    let stopper = actix::spawn(async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        driver.do_send(StopDriver);
    });
    let outcome = s
        .execute(
            "SELECT user_id, COUNT(DISTINCT video_id) FROM views GROUP BY user_id ORDER BY 2 DESC",
        )
        .await;
    stopper.await.unwrap();
    if let Err(e) = &outcome {
        let text = e.to_string();
        assert!(text.contains("driver"), "{text}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while executors.iter().any(|e| e.connected()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(executors.iter().all(|e| !e.connected()));
}

#[actix::test]
async fn local_runs_tasks_on_the_driver_thread_with_no_executor_threads() {
    let data = Data::new(1_000, 2);
    let mut s = session("local", &data).await;
    assert_eq!(s.local().unwrap().executor_threads(), 0);
    assert_eq!(
        s.local().unwrap().executors().len(),
        1,
        "one executor, inside the driver"
    );
    let sql = QUERIES[0].0;
    assert_eq!(
        sorted(rows(&mut s, sql).await),
        sorted(reference_rows(&data, sql).await)
    );
    assert!(s.stop().await);
}

#[actix::test]
async fn bad_input_gets_a_clear_error_and_the_session_goes_on() {
    let data = Data::new(300, 1);
    let mut s = session("local[2]", &data).await;
    let cases = [
        ("SELEC 1", "expected: an sql statement, found: selec"),
        ("SELECT nope FROM views", "nope"),
        ("SELECT * FROM missing_table", "missing_table"),
    ];
    for (sql, expected) in cases {
        let message = s.execute(sql).await.unwrap_err().to_string();
        assert!(
            message.to_lowercase().contains(expected),
            "{sql}: {message}"
        );
    }
    let missing = data.path("no-such-dir");
    let message = s
        .execute(&format!(
            "CREATE EXTERNAL TABLE gone (a BIGINT) STORED AS CSV LOCATION '{}/'",
            missing.display()
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("no-such-dir/' does not exist"),
        "{message}"
    );
    assert_eq!(
        rows(&mut s, "SELECT COUNT(*) FROM views").await,
        vec!["300"]
    );
    s.stop().await;
}

#[actix::test]
async fn an_unparsable_csv_row_fails_the_job_and_copy_leaves_no_output() {
    let data = Data::new(300, 2);
    let bad = data.path("views").join("part-00001.csv");
    let mut text = std::fs::read_to_string(&bad).unwrap();
    text.push_str("2026-11-01T10:00:00Z,17,not-a-number,30,US\n");
    std::fs::write(&bad, text).unwrap();
    let mut s = session("local[2]", &data).await;
    let out = data.path("out");
    let message = s
        .execute(&format!(
            "COPY (SELECT video_id, SUM(watch_seconds) AS s FROM views GROUP BY video_id) TO '{}/' STORED AS CSV",
            out.display()
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("not-a-number"), "{message}");
    assert!(
        files_under(&out).is_empty(),
        "no partial output: {:?}",
        files_under(&out)
    );

    // A good COPY writes every row once.
    let good = data.path("good.csv");
    let message = s
        .execute(&format!(
            "COPY (SELECT * FROM videos) TO '{}' STORED AS CSV",
            good.display()
        ))
        .await;
    assert!(message.is_ok(), "{message:?}");
    let written = std::fs::read_to_string(&good).unwrap();
    assert_eq!(
        written.lines().count(),
        1 + 200,
        "header and the 200 catalogued videos"
    );
    s.stop().await;
}

/// Hidden staging directories the output commit left in `dir`.
fn staging_dirs_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".ember-staging-"))
        .collect()
}

#[actix::test]
async fn copy_to_a_directory_commits_every_row_once_with_a_success_marker() {
    let data = Data::new(600, 2);
    let mut s = session("local[2]", &data).await;
    let out = data.path("watch_time");
    let query = "SELECT video_id, SUM(watch_seconds) AS s FROM views GROUP BY video_id";
    let copied = s
        .execute(&format!(
            "COPY ({query}) TO '{}/' STORED AS CSV",
            out.display()
        ))
        .await;
    assert!(copied.is_ok(), "{copied:?}");
    assert!(out.join("_SUCCESS").is_file());
    assert!(staging_dirs_in(data.dir.path()).is_empty());

    s.execute(&format!(
        "CREATE EXTERNAL TABLE written (video_id BIGINT, s BIGINT) STORED AS CSV \
         LOCATION '{}/' OPTIONS ('format.has_header' 'true')",
        out.display()
    ))
    .await
    .unwrap();
    assert_eq!(
        sorted(rows(&mut s, "SELECT * FROM written").await),
        sorted(rows(&mut s, query).await)
    );
    s.stop().await;
}

#[actix::test]
async fn insert_into_an_external_table_appends_its_rows_once() {
    let data = Data::new(300, 1);
    let mut s = session("local[2]", &data).await;
    let before = rows(&mut s, "SELECT COUNT(*) FROM videos").await;
    assert_eq!(before, vec!["200"]);
    let inserted = s
        .execute("INSERT INTO videos SELECT video_id + 1000, title, category FROM videos WHERE category = 'news'")
        .await;
    assert!(inserted.is_ok(), "{inserted:?}");
    assert_eq!(
        rows(&mut s, "SELECT COUNT(*) FROM videos").await,
        vec!["250"]
    );
    assert!(data.path("videos").join("videos.csv").is_file());
    assert!(staging_dirs_in(data.dir.path()).is_empty());
    s.stop().await;
}

#[actix::test]
async fn a_copy_that_fails_at_run_time_leaves_no_destination_and_no_staging_dir() {
    let data = Data::new(300, 2);
    let bad = data.path("views").join("part-00000.csv");
    let mut text = std::fs::read_to_string(&bad).unwrap();
    text.push_str("2026-11-01T10:00:00Z,17,12,thirty,US\n");
    std::fs::write(&bad, text).unwrap();
    let mut s = session("local[2]", &data).await;
    let out = data.path("watch_time");
    let failed = s
        .execute(&format!(
            "COPY (SELECT video_id, SUM(watch_seconds) AS s FROM views GROUP BY video_id) TO '{}/' STORED AS PARQUET",
            out.display()
        ))
        .await;
    assert!(failed.is_err(), "{failed:?}");
    assert!(!out.exists(), "no destination: {:?}", files_under(&out));
    assert!(staging_dirs_in(data.dir.path()).is_empty());
    s.stop().await;
}

#[actix::test]
async fn the_driver_sees_an_executor_end_and_jobs_go_on_without_it() {
    let data = Data::new(2_000, 2);
    let mut s = session("local[3]", &data).await;
    let driver = s.local().unwrap().driver().clone();
    let listed = driver.send(ListExecutors::ACTIVE).await.unwrap();
    assert_eq!(listed.len(), 2, "local[3]: two executors registered");
    assert_eq!(listed.iter().map(|e| e.slots).sum::<usize>(), 3);
    let executors = s.local().unwrap().executors();
    executors[0].do_send(ExecutorMessage::Stop);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut remaining = listed.len();
    while remaining != 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        remaining = driver.send(ListExecutors::ACTIVE).await.unwrap().len();
    }
    assert_eq!(remaining, 1, "the driver dropped the executor that ended");
    let sql = QUERIES[1].0;
    assert_eq!(
        sorted(rows(&mut s, sql).await),
        sorted(reference_rows(&data, sql).await)
    );
    // The full roster keeps the lost executor, with why, and counts what
    // each ran: the query's tasks all ran on the survivor.
    let roster = s.executors(true).await;
    assert_eq!(roster.len(), 2, "{roster:?}");
    let (lost, active): (Vec<_>, Vec<_>) = roster
        .iter()
        .partition(|e| matches!(e.state, ExecutorState::Removed(_)));
    assert_eq!((lost.len(), active.len()), (1, 1), "{roster:?}");
    assert_eq!(lost[0].id, listed[0].id);
    assert_eq!(lost[0].tasks_succeeded, 0);
    assert!(active[0].tasks_succeeded >= 2, "{roster:?}");
    assert_eq!(active[0].host, "localhost");
    assert_eq!(s.executors(false).await.len(), 1);
    assert!(s.stop().await);
}
