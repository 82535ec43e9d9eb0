//! The application, run by hand in local mode, answers as plain
//! DataFusion does on the same data (the rows it prints, the Parquet file
//! it writes). Every other mode is the `ember` package's end-to-end tests'.

use std::process::Command;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};

const VIEWS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/views/");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_answers_as_plain_datafusion() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("per_video.parquet");
    let run = Command::new(env!("CARGO_BIN_EXE_watch-time-app"))
        .args([VIEWS, out.to_str().unwrap()])
        .env("EMBER_APP_ARGS", "--master=local[2]")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let ctx = SessionContext::new();
    ctx.register_csv("views", VIEWS, CsvReadOptions::new().has_header(true))
        .await
        .unwrap();
    let top = ctx
        .sql(
            "SELECT video_id, SUM(watch_seconds) / 60.0 AS minutes, COUNT(*) AS views \
             FROM views GROUP BY video_id ORDER BY minutes DESC LIMIT 10",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut expected = Vec::new();
    ember::output::write_batches(
        &mut expected,
        ember::output::OutputFormat::Csv,
        &top[0].schema(),
        &top,
        ember::output::Limits::default(),
    )
    .unwrap();
    let expected = String::from_utf8(expected).unwrap();
    assert!(
        stdout.starts_with(&expected),
        "{stdout}\nwanted first:\n{expected}"
    );

    let per_video = |sql: &str| {
        let ctx = ctx.clone();
        let sql = sql.to_string();
        async move {
            let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            pretty_format_batches(&batches).unwrap().to_string()
        }
    };
    ctx.register_parquet(
        "written",
        out.to_str().unwrap(),
        ParquetReadOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        per_video("SELECT * FROM written").await,
        per_video(
            "SELECT video_id, SUM(watch_seconds) / 60.0 AS minutes, COUNT(*) AS views, \
             COUNT(DISTINCT user_id) AS viewers FROM views GROUP BY video_id ORDER BY video_id"
        )
        .await
    );
}
