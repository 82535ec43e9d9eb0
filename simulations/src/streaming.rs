//! The streaming workload: a client-mode application runs two streaming
//! queries over the same files arriving in a directory, each with its
//! checkpoint, through the real session on the simulated cluster, while
//! the seed's faults happen: a filter into CSV files (one `batch=N`
//! directory a batch), and a count and sum per key in `COMPLETE` mode,
//! whose state lives per partition on the executors and in its
//! checkpoint. A batch that
//! fails ends the query; the application starts it again on the same
//! checkpoint, as an operator would, a few times. A cluster-mode
//! submission runs the same query at the end of its script: each driver
//! attempt the manager relaunches goes on from the checkpoint.
//!
//! What it promises, checked after every start and at the end:
//! - offsets never go back: a batch's offset log entry, once written, never
//!   changes, and no file is taken by two batches;
//! - a committed batch is never redone differently: every commit has its
//!   offsets, and every batch directory holds exactly the rows of its
//!   offsets' files (a batch run again replaced its own);
//! - the sink holds every row at most once, and, once a start ran to the
//!   end of the input, every row of every file exactly once;
//! - the aggregation's every batch directory holds the counts and sums of
//!   exactly the files of its batch and the batches before it: state lost
//!   with an executor or a driver, or merged twice, shows there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ember_session::{Session, SessionError};

/// Input files, and rows in each.
pub const FILES: u64 = 4;
const ROWS_PER_FILE: u64 = 60;
/// Starts of the query before the application gives up on it.
const STARTS: usize = 4;

/// How the application's streaming query went.
#[derive(Debug, Default)]
pub struct StreamRun {
    /// Whether a start of it ran to the end of the input.
    pub finished: bool,
    pub starts: usize,
    /// The last failure, if it never finished.
    pub failure: Option<String>,
    pub violations: Vec<String>,
}

/// The query's rows of input file `n`: `(id, w)` of ids with `v % 3 <> 0`.
fn expected_rows(n: u64) -> Vec<String> {
    (n * ROWS_PER_FILE..(n + 1) * ROWS_PER_FILE)
        .filter(|id| id % 7 % 3 != 0)
        .map(|id| format!("{id},{}", id % 7 * 2))
        .collect()
}

fn file_name(n: u64) -> String {
    format!("part-{n:03}.csv")
}

/// Writes the input files (ids `n*60 ..`, `v = id % 7`).
pub fn write_inputs(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("in"))?;
    for n in 0..FILES {
        let mut csv = String::from("id,v\n");
        for id in n * ROWS_PER_FILE..(n + 1) * ROWS_PER_FILE {
            csv.push_str(&format!("{id},{}\n", id % 7));
        }
        std::fs::write(dir.join("in").join(file_name(n)), csv)?;
    }
    Ok(())
}

/// Runs application `app`'s streaming query under `dir` to the end of its
/// input, starting it again after a failure; `gone` says whether the
/// application's host crashed (then it stops trying).
pub async fn run(
    session: &mut Session,
    app: usize,
    dir: &Path,
    gone: impl Fn() -> bool,
) -> StreamRun {
    let mut run = StreamRun::default();
    if let Err(e) = write_inputs(dir) {
        run.violations
            .push(format!("stream of app {app}: cannot write its input: {e}"));
        return run;
    }
    let [source, start, counts] = statements(app, dir);
    if let Err(e) = session.execute(&source).await {
        run.failure = Some(e.to_string());
        return run;
    }
    let mut seen: BTreeMap<u64, String> = BTreeMap::new();
    let mut seen_counts: BTreeMap<u64, String> = BTreeMap::new();
    while run.starts < STARTS && !gone() {
        run.starts += 1;
        // Both queries run at once, in the background, under the same
        // faults; then both are awaited.
        let mut ran = Ok(());
        let mut started = Vec::new();
        for (query, statement) in [("stream", &start), ("counts", &counts)] {
            match session.execute(statement).await {
                Ok(_) => started.push(query),
                Err(e) => ran = Err(e),
            }
        }
        for query in started {
            let awaited = session
                .execute(&format!("AWAIT STREAMING QUERY {query}_{app}"))
                .await
                .map(|_| ());
            ran = ran.and(awaited);
        }
        check_offsets(app, dir, &mut seen, &mut run.violations);
        check_offsets(
            app,
            &dir.join(COUNTS),
            &mut seen_counts,
            &mut run.violations,
        );
        match ran {
            Ok(()) => {
                run.finished = true;
                run.failure = None;
                break;
            }
            Err(SessionError::DriverGone(why)) => {
                run.failure = Some(why);
                break;
            }
            Err(e) => run.failure = Some(e.to_string()),
        }
    }
    check_output(app, dir, run.finished, &mut run.violations);
    check_counts(app, dir, run.finished, &mut run.violations);
    run
}

/// Where the aggregation keeps its checkpoint and output, under a stream's
/// directory.
const COUNTS: &str = "counts";

/// The stream's statements: its source, its filter's start, and its
/// aggregation's start.
pub fn statements(app: usize, dir: &Path) -> [String; 3] {
    [
        format!(
            "CREATE UNBOUNDED EXTERNAL TABLE events_{app} (id BIGINT, v BIGINT) STORED AS CSV \
             LOCATION '{}/' OPTIONS ('format.has_header' 'true', 'maxFilesPerTrigger' '1')",
            dir.join("in").display()
        ),
        format!(
            "START STREAMING QUERY stream_{app} TRIGGER AVAILABLE NOW CHECKPOINT '{}' \
             INTO CSV '{}' AS SELECT id, v * 2 AS w FROM events_{app} WHERE v % 3 <> 0",
            dir.join("ckpt").display(),
            dir.join("out").display()
        ),
        format!(
            "START STREAMING QUERY counts_{app} TRIGGER AVAILABLE NOW CHECKPOINT '{}' \
             OUTPUT MODE COMPLETE INTO CSV '{}' \
             AS SELECT v, count(*) AS n, sum(id) AS ids FROM events_{app} GROUP BY v",
            dir.join(COUNTS).join("ckpt").display(),
            dir.join(COUNTS).join("out").display()
        ),
    ]
}

/// A cluster-mode submission's stream, once the submission ended (its
/// driver attempts ran the query, each from the checkpoint the one before
/// left): no file in two batches, every batch directory exactly its rows,
/// and, `finished`, every row once.
pub fn settle(app: usize, dir: &Path, finished: bool) -> StreamRun {
    let mut run = StreamRun {
        finished,
        ..StreamRun::default()
    };
    check_offsets(app, dir, &mut BTreeMap::new(), &mut run.violations);
    check_offsets(
        app,
        &dir.join(COUNTS),
        &mut BTreeMap::new(),
        &mut run.violations,
    );
    check_output(app, dir, finished, &mut run.violations);
    check_counts(app, dir, finished, &mut run.violations);
    run
}

/// The offset log's entries: batch → its text.
fn offset_log(dir: &Path, kind: &str) -> BTreeMap<u64, String> {
    let Ok(entries) = std::fs::read_dir(dir.join("ckpt").join(kind)) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let batch = e.file_name().to_string_lossy().parse::<u64>().ok()?;
            Some((batch, std::fs::read_to_string(e.path()).unwrap_or_default()))
        })
        .collect()
}

/// The input files an offset log entry names.
fn files_of(entry: &str) -> Vec<String> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(entry) else {
        return Vec::new();
    };
    value["sources"]
        .as_object()
        .into_iter()
        .flat_map(|sources| sources.values())
        .flat_map(|offset| {
            offset["files"]["files"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|f| {
            Path::new(f.as_str()?)
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
        })
        .collect()
}

/// Offsets never go back: what was written for a batch stays as it was,
/// and no file is in two batches (of the query whose checkpoint is
/// `dir/ckpt`).
fn check_offsets(
    app: usize,
    dir: &Path,
    seen: &mut BTreeMap<u64, String>,
    violations: &mut Vec<String>,
) {
    let offsets = offset_log(dir, "offsets");
    for (batch, text) in &offsets {
        match seen.get(batch) {
            Some(before) if before != text => violations.push(format!(
                "stream offsets went back: app {app} batch {batch}'s offsets changed from {before} to {text}"
            )),
            Some(_) => {}
            None => {
                seen.insert(*batch, text.clone());
            }
        }
    }
    for batch in seen.keys() {
        if !offsets.contains_key(batch) {
            violations.push(format!(
                "stream offsets went back: app {app} batch {batch}'s offsets are gone"
            ));
        }
    }
    let mut taken = BTreeSet::new();
    for (batch, text) in &offsets {
        for file in files_of(text) {
            if !taken.insert(file.clone()) {
                violations.push(format!(
                    "stream offsets went back: app {app} batch {batch} takes {file} again"
                ));
            }
        }
    }
}

/// The rows of a CSV output directory (its header lines left out).
fn rows_in(dir: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return rows;
    };
    for entry in entries.filter_map(Result::ok) {
        let path: PathBuf = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('_') || name.starts_with('.') || !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        rows.extend(
            text.lines()
                .filter(|l| !l.is_empty() && *l != "id,w")
                .map(str::to_string),
        );
    }
    rows.sort();
    rows
}

/// Every batch directory holds exactly its offsets' rows; committed
/// batches have offsets; finished, the output is every input row once.
fn check_output(app: usize, dir: &Path, finished: bool, violations: &mut Vec<String>) {
    let offsets = offset_log(dir, "offsets");
    let commits = offset_log(dir, "commits");
    for batch in commits.keys() {
        if !offsets.contains_key(batch) {
            violations.push(format!(
                "stream batch redone differently: app {app} batch {batch} committed without offsets"
            ));
        }
    }
    let out = dir.join("out");
    let batches: Vec<u64> = std::fs::read_dir(&out)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_prefix("batch=")?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    let mut all = Vec::new();
    for batch in &batches {
        let Some(entry) = offsets.get(batch) else {
            violations.push(format!(
                "stream batch redone differently: app {app} wrote batch {batch} without offsets"
            ));
            continue;
        };
        let mut expected: Vec<String> = file_numbers(entry)
            .into_iter()
            .flat_map(expected_rows)
            .collect();
        expected.sort();
        let rows = rows_in(&out.join(format!("batch={batch}")));
        if rows != expected {
            violations.push(format!(
                "stream sink rows not exactly once: app {app} batch {batch} holds {} rows, not the {} of its offsets, or other rows",
                rows.len(),
                expected.len()
            ));
        }
        all.extend(rows);
    }
    if finished {
        let mut expected: Vec<String> = (0..FILES).flat_map(expected_rows).collect();
        expected.sort();
        all.sort();
        if all != expected {
            violations.push(format!(
                "stream sink rows not exactly once: app {app}'s stream finished with {} rows, not the {} of its input, or other rows",
                all.len(),
                expected.len()
            ));
        }
    }
}

/// The file numbers an offset log entry names.
fn file_numbers(entry: &str) -> Vec<u64> {
    files_of(entry)
        .iter()
        .filter_map(|f| f.strip_prefix("part-")?.strip_suffix(".csv")?.parse().ok())
        .collect()
}

/// `v,n,ids` lines of the counts and id sums per `v` over input files
/// `files`, sorted.
fn expected_counts(files: &BTreeSet<u64>) -> Vec<String> {
    let mut per_v: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for n in files {
        for id in n * ROWS_PER_FILE..(n + 1) * ROWS_PER_FILE {
            let entry = per_v.entry(id % 7).or_default();
            entry.0 += 1;
            entry.1 += id;
        }
    }
    let mut lines: Vec<String> = per_v
        .into_iter()
        .map(|(v, (n, ids))| format!("{v},{n},{ids}"))
        .collect();
    lines.sort();
    lines
}

/// Every batch directory of the aggregation holds the counts of exactly
/// the files of its batch and the ones before (`COMPLETE` writes every
/// group); finished, the last holds those of every file.
fn check_counts(app: usize, dir: &Path, finished: bool, violations: &mut Vec<String>) {
    let dir = dir.join(COUNTS);
    let offsets = offset_log(&dir, "offsets");
    let commits = offset_log(&dir, "commits");
    let out = dir.join("out");
    let mut upto = BTreeSet::new();
    let mut last = None;
    for (batch, entry) in &offsets {
        upto.extend(file_numbers(entry));
        let written = out.join(format!("batch={batch}"));
        if !written.exists() {
            if commits.contains_key(batch) {
                violations.push(format!(
                    "stream state lost: app {app}'s aggregation committed batch {batch} without its output"
                ));
            }
            continue;
        }
        let mut rows: Vec<String> = rows_in(&written)
            .into_iter()
            .filter(|l| l != "v,n,ids")
            .collect();
        rows.sort();
        let expected = expected_counts(&upto);
        if rows != expected {
            violations.push(format!(
                "stream state wrong: app {app}'s aggregation wrote {rows:?} in batch {batch}, not {expected:?} (files {upto:?})"
            ));
        }
        last = Some(upto.clone());
    }
    if finished && last.is_none_or(|files| files.len() as u64 != FILES) {
        violations.push(format!(
            "stream state wrong: app {app}'s aggregation finished without a batch over all {FILES} files"
        ));
    }
}
