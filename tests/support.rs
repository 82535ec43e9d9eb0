//! Fixtures: small generated data sets, sessions, and rows as sortable text.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ember_testkit::{BoundedChild, BoundedCommand};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{SessionConfig, SessionContext};
use ember::datagen::{ViewsSpec, generate_views};
use ember::{Master, Session, SessionOptions, StatementOutcome};
use ember_actors::EmberConf;

/// A directory with `views/` (generated events) and `videos/` (a dimension
/// table of titles and categories), deleted when dropped.
pub struct Data {
    pub dir: tempfile::TempDir,
}

impl Data {
    pub fn new(rows: u64, files: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        generate_views(&ViewsSpec {
            rows,
            files,
            out: dir.path().join("views"),
            seed: 11,
            day: "2026-11-01".to_string(),
            videos: 300,
            force: false,
        })
        .unwrap();
        let videos = dir.path().join("videos");
        std::fs::create_dir_all(&videos).unwrap();
        let mut csv = String::from("video_id,title,category\n");
        // Only some videos are catalogued, so inner and outer joins differ.
        for id in (1..=300).filter(|i| i % 3 != 0) {
            csv.push_str(&format!(
                "{id},Video {id},{}\n",
                ["music", "news", "sport", "games"][id % 4]
            ));
        }
        std::fs::write(videos.join("videos.csv"), csv).unwrap();
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// DDL registering both tables.
    pub fn ddl(&self) -> Vec<String> {
        vec![
            format!(
                "CREATE EXTERNAL TABLE views (event_time TIMESTAMP NOT NULL, user_id BIGINT NOT NULL, \
                 video_id BIGINT NOT NULL, watch_seconds BIGINT NOT NULL, country VARCHAR NOT NULL) \
                 STORED AS CSV LOCATION '{}/' OPTIONS ('format.has_header' 'true')",
                self.path("views").display()
            ),
            format!(
                "CREATE EXTERNAL TABLE videos (video_id BIGINT NOT NULL, title VARCHAR NOT NULL, \
                 category VARCHAR NOT NULL) STORED AS CSV LOCATION '{}/' OPTIONS ('format.has_header' 'true')",
                self.path("videos").display()
            ),
        ]
    }
}

pub fn master(url: &str) -> Master {
    Master::parse(url, 2).unwrap()
}

/// Starts a session on `url` with the default settings and no tables.
pub async fn bare_session(url: &str) -> Session {
    Session::start(SessionOptions {
        master: master(url),
        conf: EmberConf::new(),
        functions: ember_engine::Functions::new(),
        listener: None,
        files: vec![],
        cluster: None,
    })
    .await
    .unwrap()
}

/// Starts a session on `url` with both tables registered.
pub async fn session(url: &str, data: &Data) -> Session {
    let mut session = bare_session(url).await;
    for ddl in data.ddl() {
        session.execute(&ddl).await.unwrap();
    }
    session
}

/// Runs a query on a session and returns its rows as text.
pub async fn rows(session: &mut Session, sql: &str) -> Vec<String> {
    match session.execute(sql).await {
        Ok(StatementOutcome::Rows(out)) => to_lines(&out.batches),
        other => panic!("{sql}: expected rows, got {other:?}"),
    }
}

/// The same query on plain DataFusion, as the reference.
pub async fn reference_rows(data: &Data, sql: &str) -> Vec<String> {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    for ddl in data.ddl() {
        ctx.sql(&ddl).await.unwrap();
    }
    to_lines(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

pub fn to_lines(batches: &[RecordBatch]) -> Vec<String> {
    ember::simulations::workload::rows(batches)
}

/// Runs `job` with `ember submit --master local[2]` (the reference) and
/// returns the CSV it printed.
pub fn local_rows(job: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["submit", "--master", "local[2]", "--format", "csv"])
        .arg(job)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .bounded_output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// A command's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Log text without colour codes, so lines can be matched.
pub fn plain(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for n in chars.by_ref() {
                if n == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

/// Files below `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

// The bounds on the processes tests run.

#[test]
fn a_command_past_its_bound_is_killed_and_named_with_what_it_printed() {
    let started = Instant::now();
    let e = std::process::Command::new("sh")
        .args(["-c", "echo begun; exec sleep 30"])
        .output_within(Duration::from_millis(300))
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    let message = e.to_string();
    assert!(
        message.contains("`sh -c echo begun; exec sleep 30`"),
        "{message}"
    );
    assert!(message.contains("begun"), "{message}");
}

#[test]
fn a_command_on_time_gives_what_output_gives() {
    let out = std::process::Command::new("sh")
        .args(["-c", "echo out; echo err >&2; exit 3"])
        .bounded_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
}

#[test]
fn a_child_past_its_bound_is_killed() {
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let e = child.wait_within(Duration::from_millis(200)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    assert!(child.try_wait().unwrap().is_some(), "it was reaped");
}
