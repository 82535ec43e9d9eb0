//! The output commit protocol for file sinks (Spark's FileOutputCommitter,
//! committed by the driver): each task attempt writes into its own directory
//! inside a hidden staging directory beside the destination, and only the
//! attempts a successful job used are moved into the destination.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::datasource::file_format::csv::CsvSink;
use datafusion::datasource::file_format::json::JsonSink;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::physical_plan::parquet::ParquetSink;
use datafusion::datasource::physical_plan::{FileSink, FileSinkConfig};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::physical_plan::ExecutionPlan;

use crate::error::EngineError;

/// Names a staging directory: `.<destination name>.ember-staging-<random>`.
const STAGING_MARK: &str = ".ember-staging-";
/// Written into a directory destination once every file is in place.
const SUCCESS_MARKER: &str = "_SUCCESS";

/// What [`StagedOutput::commit_once`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// This attempt's files are the output.
    Now,
    /// An earlier attempt of the same submission committed the output;
    /// this one's files were dropped.
    Earlier,
}

/// One attempt at one partition of one stage, as the scheduler numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskAttempt {
    pub stage: usize,
    pub partition: usize,
    pub attempt: u32,
}

impl TaskAttempt {
    fn dir_name(&self) -> String {
        format!("attempt-{}-{}-{}", self.stage, self.partition, self.attempt)
    }
}

/// A file sink's output while its job runs: written under `dir`, moved to
/// `destination` by [`StagedOutput::commit`]. Dropped without a commit or an
/// abort (the statement's future was dropped, as Ctrl-C does), it aborts.
#[derive(Debug)]
pub struct StagedOutput {
    dir: PathBuf,
    destination: PathBuf,
    /// The destination's last component, which every attempt writes under,
    /// so DataFusion picks single-file or directory output as it would have.
    name: OsString,
    single_file: bool,
    settled: bool,
}

/// Rewrites `plan`, whose root must be a Parquet, CSV or JSON sink writing to
/// a file system, to write into a fresh staging directory beside its
/// destination; nothing is written inside the destination before the commit.
pub fn stage_file_output(
    plan: Arc<dyn ExecutionPlan>,
) -> Result<(Arc<dyn ExecutionPlan>, StagedOutput), EngineError> {
    let Some(exec) = plan.downcast_ref::<DataSinkExec>() else {
        return Err(EngineError::UnsupportedSink(format!(
            "a plan whose root is {}",
            plan.name()
        )));
    };
    let Some(sink) = KnownSink::of(exec.sink()) else {
        return Err(EngineError::UnsupportedSink(format!("{:?}", exec.sink())));
    };
    let config = sink.config();
    let url = output_url(config)?;
    let object_store_output = || EngineError::ObjectStoreOutput(url.to_string());
    if url.scheme() != "file" {
        return Err(object_store_output());
    }
    let destination = url
        .get_url()
        .to_file_path()
        .map_err(|()| object_store_output())?;
    let (Some(parent), Some(name)) = (destination.parent(), destination.file_name()) else {
        return Err(EngineError::Staging {
            action: "stage output for",
            path: destination,
            source: io::Error::new(io::ErrorKind::InvalidInput, "it has no parent directory"),
        });
    };
    std::fs::create_dir_all(parent).map_err(staging_error("create", parent))?;
    let dir = tempfile::Builder::new()
        .prefix(&staging_prefix(name))
        .tempdir_in(parent)
        .map_err(staging_error("create a staging directory in", parent))?
        .keep();
    let staged = StagedOutput {
        single_file: config.table_partition_cols.is_empty()
            && config.file_output_mode.single_file_output(url),
        name: name.to_os_string(),
        destination,
        dir,
        settled: false,
    };
    let plan = redirect(exec, &sink, &staged.dir.join(&staged.name))?;
    Ok((plan, staged))
}

/// Gives one task attempt its own directory: a plan whose root sink writes
/// into a staging directory is rewritten to write into
/// `attempt-<stage>-<partition>-<attempt>/` inside it, so retried and
/// duplicate attempts never share a file. Any other plan is returned as is.
pub fn isolate_attempt(
    plan: Arc<dyn ExecutionPlan>,
    attempt: TaskAttempt,
) -> Result<Arc<dyn ExecutionPlan>, EngineError> {
    let Some(exec) = plan.downcast_ref::<DataSinkExec>() else {
        return Ok(plan);
    };
    let Some(sink) = KnownSink::of(exec.sink()) else {
        return Ok(plan);
    };
    let Some(staged) = output_url(sink.config())?.get_url().to_file_path().ok() else {
        return Ok(plan);
    };
    let (Some(dir), Some(name)) = (staged.parent(), staged.file_name()) else {
        return Ok(plan);
    };
    if !is_staging_dir(dir, name) {
        return Ok(plan);
    }
    redirect(exec, &sink, &dir.join(attempt.dir_name()).join(name))
}

impl StagedOutput {
    /// The hidden directory the attempts write into.
    pub fn staging_dir(&self) -> &Path {
        &self.dir
    }

    /// Moves the files of `attempts` (the ones the job used, one per
    /// partition) into the destination, keeping sub-directories such as hive
    /// partitions, marks a directory destination with `_SUCCESS`, and removes
    /// the staging directory with every other attempt's files.
    pub fn commit(mut self, attempts: &[TaskAttempt]) -> Result<(), EngineError> {
        // From here on only a complete commit may delete staged files: after
        // a failure they are what the user has left to recover.
        self.settled = true;
        if self.single_file && attempts.len() != 1 {
            let message = format!(
                "single-file output needs exactly one committed attempt, the job used {}",
                attempts.len()
            );
            return Err(self.commit_error(&self.dir, io::Error::other(message)));
        }
        for attempt in attempts {
            let written = self.dir.join(attempt.dir_name()).join(&self.name);
            if self.single_file {
                std::fs::rename(&written, &self.destination)
                    .map_err(|e| self.commit_error(&written, e))?;
            } else if written.exists() {
                move_tree(&written, &self.destination)
                    .map_err(|(path, e)| self.commit_error(&path, e))?;
            }
        }
        if !self.single_file {
            std::fs::create_dir_all(&self.destination)
                .map_err(|e| self.commit_error(&self.destination, e))?;
            let marker = self.destination.join(SUCCESS_MARKER);
            std::fs::File::create(&marker).map_err(|e| self.commit_error(&marker, e))?;
        }
        // The output is committed; a staging directory left over is litter,
        // not a reason to fail the statement.
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(path = %self.dir.display(), error = %e, "could not remove the staging directory after a commit");
        }
        Ok(())
    }

    fn commit_error(&self, path: &Path, source: io::Error) -> EngineError {
        EngineError::Commit {
            destination: self.destination.clone(),
            path: path.to_path_buf(),
            staging: self.dir.clone(),
            source,
        }
    }

    /// [`commit`](Self::commit), at most once for `claim` (a submission and
    /// the statement's place in it): the first attempt to claim the output
    /// commits it; any later attempt of the same submission finds it done,
    /// drops its own files and reports [`Committed::Earlier`]. A claim whose
    /// commit never finished (its attempt died moving files) is an error
    /// that names what is left, never a second copy.
    pub fn commit_once(
        self,
        attempts: &[TaskAttempt],
        claim: &str,
    ) -> Result<Committed, EngineError> {
        let parent = self.dir.parent().unwrap_or(Path::new("."));
        let marker = parent.join(format!(
            ".{}.ember-committed-{claim}",
            self.name.to_string_lossy()
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
        {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let state = std::fs::read_to_string(&marker).unwrap_or_default();
                let staging = self.dir.clone();
                self.abort()?;
                if state.trim() == "committed" {
                    return Ok(Committed::Earlier);
                }
                return Err(EngineError::CommitInDoubt { marker, staging });
            }
            Err(e) => return Err(self.commit_error(&marker, e)),
        }
        self.commit(attempts)?;
        std::fs::write(&marker, "committed\n")
            .map_err(staging_error("mark as committed the output claim", &marker))?;
        Ok(Committed::Now)
    }

    /// Drops every attempt's files; the destination is left as it was.
    pub fn abort(mut self) -> Result<(), EngineError> {
        self.settled = true;
        std::fs::remove_dir_all(&self.dir)
            .map_err(staging_error("remove the staging directory", &self.dir))
    }
}

impl Drop for StagedOutput {
    fn drop(&mut self) {
        if !self.settled
            && let Err(e) = std::fs::remove_dir_all(&self.dir)
        {
            tracing::warn!(path = %self.dir.display(), error = %e, "could not remove the staging directory of an abandoned job");
        }
    }
}

fn staging_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> EngineError {
    let path = path.to_path_buf();
    move |source| EngineError::Staging {
        action,
        path,
        source,
    }
}

/// The sinks Ember knows how to point elsewhere.
enum KnownSink<'a> {
    Parquet(&'a ParquetSink),
    Csv(&'a CsvSink),
    Json(&'a JsonSink),
}

impl<'a> KnownSink<'a> {
    fn of(sink: &'a dyn DataSink) -> Option<Self> {
        if let Some(s) = sink.downcast_ref::<ParquetSink>() {
            Some(Self::Parquet(s))
        } else if let Some(s) = sink.downcast_ref::<CsvSink>() {
            Some(Self::Csv(s))
        } else {
            sink.downcast_ref::<JsonSink>().map(Self::Json)
        }
    }

    fn config(&self) -> &FileSinkConfig {
        match self {
            Self::Parquet(s) => s.config(),
            Self::Csv(s) => s.config(),
            Self::Json(s) => s.config(),
        }
    }

    /// The same sink with another configuration. A Parquet sink's
    /// sorting-column metadata cannot be read back, so it is not kept (as
    /// when datafusion-proto ships the sink to an executor).
    fn with_config(&self, config: FileSinkConfig) -> Arc<dyn DataSink> {
        match self {
            Self::Parquet(s) => Arc::new(ParquetSink::new(config, s.parquet_options().clone())),
            Self::Csv(s) => Arc::new(CsvSink::new(config, s.writer_options().clone())),
            Self::Json(s) => Arc::new(JsonSink::new(config, s.writer_options().clone())),
        }
    }
}

/// The URL a sink writes under (only the first of a table's paths is).
fn output_url(config: &FileSinkConfig) -> Result<&ListingTableUrl, EngineError> {
    config
        .table_paths
        .first()
        .ok_or_else(|| EngineError::UnsupportedSink("a file sink with no output path".to_string()))
}

/// How the name of a staging directory for output named `name` starts.
fn staging_prefix(name: &std::ffi::OsStr) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(STAGING_MARK);
    prefix
}

/// Whether `dir` is a staging directory made for output named `name`.
fn is_staging_dir(dir: &Path, name: &std::ffi::OsStr) -> bool {
    let prefix = staging_prefix(name);
    dir.file_name()
        .is_some_and(|d| d.as_encoded_bytes().starts_with(prefix.as_encoded_bytes()))
}

/// `exec` writing to `path` instead, as a directory if it wrote to one.
fn redirect(
    exec: &DataSinkExec,
    sink: &KnownSink<'_>,
    path: &Path,
) -> Result<Arc<dyn ExecutionPlan>, EngineError> {
    let mut config = sink.config().clone();
    let Some(old) = config.table_paths.first_mut() else {
        return Err(EngineError::UnsupportedSink(
            "a file sink with no output path".to_string(),
        ));
    };
    let mut text = path
        .to_str()
        .ok_or_else(|| EngineError::Staging {
            action: "stage output for",
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "the path is not UTF-8"),
        })?
        .to_string();
    // A trailing slash is what tells DataFusion to write a directory.
    if old.is_collection() {
        text.push('/');
    }
    *old = ListingTableUrl::parse(&text)?;
    Ok(Arc::new(DataSinkExec::new(
        Arc::clone(exec.input()),
        sink.with_config(config),
        exec.sort_order().clone(),
    )))
}

/// Moves `from` to `to`: one rename when `to` is new, else entry by entry so
/// what is already in the destination stays. On failure, names the path.
fn move_tree(from: &Path, to: &Path) -> Result<(), (PathBuf, io::Error)> {
    if std::fs::symlink_metadata(to).is_err() {
        return std::fs::rename(from, to).map_err(|e| (from.to_path_buf(), e));
    }
    if !from.is_dir() {
        let clash = io::Error::new(io::ErrorKind::AlreadyExists, "a file of that name exists");
        return Err((to.to_path_buf(), clash));
    }
    let entries = std::fs::read_dir(from).map_err(|e| (from.to_path_buf(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| (from.to_path_buf(), e))?;
        move_tree(&entry.path(), &to.join(entry.file_name()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use datafusion::error::Result;
    use datafusion::physical_plan::common::collect;
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn physical(ctx: &SessionContext, sql: &str) -> Result<Arc<dyn ExecutionPlan>> {
        ctx.sql(sql).await?.create_physical_plan().await
    }

    /// Runs `attempt` of a staged sink plan as an executor would.
    async fn run(
        ctx: &SessionContext,
        plan: &Arc<dyn ExecutionPlan>,
        attempt: TaskAttempt,
    ) -> Result<()> {
        let plan = isolate_attempt(Arc::clone(plan), attempt)?;
        collect(plan.execute(attempt.partition, ctx.task_ctx())?).await?;
        Ok(())
    }

    fn attempt(attempt: u32) -> TaskAttempt {
        TaskAttempt {
            stage: 3,
            partition: 0,
            attempt,
        }
    }

    /// Data lines of every CSV file under `dir`, headers dropped, sorted.
    fn csv_rows(dir: &Path) -> Vec<String> {
        let mut rows = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rows.extend(csv_rows(&path));
            } else if path.extension().is_some_and(|e| e == "csv") {
                let text = std::fs::read_to_string(&path).unwrap();
                rows.extend(text.lines().skip(1).map(str::to_string));
            }
        }
        rows.sort();
        rows
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn two_attempts_of_a_partition_commit_one_copy_of_the_rows() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let out = tmp.path().join("out");
        let ctx = SessionContext::new();
        let sql = format!("COPY (VALUES (1),(2)) TO '{}' STORED AS CSV", out.display());
        let (plan, staged) = stage_file_output(physical(&ctx, &sql).await?)?;
        let staging = staged.staging_dir().to_path_buf();
        assert_eq!(staging.parent(), Some(tmp.path()));

        run(&ctx, &plan, attempt(0)).await?;
        run(&ctx, &plan, attempt(1)).await?;
        assert!(
            !out.exists(),
            "nothing is written into the destination before the commit"
        );
        assert_eq!(csv_rows(&staging), vec!["1", "1", "2", "2"]);

        staged.commit(&[attempt(1)])?;
        assert_eq!(csv_rows(&out), vec!["1", "2"]);
        assert!(out.join(SUCCESS_MARKER).is_file());
        assert_eq!(
            names_in(tmp.path()),
            vec!["out"],
            "the staging directory is gone"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_claimed_output_is_committed_once_whatever_runs_it_again() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let out = tmp.path().join("out");
        let ctx = SessionContext::new();
        let sql = format!("COPY (VALUES (1),(2)) TO '{}' STORED AS CSV", out.display());
        // Two attempts of one submission, each a whole run of the statement.
        let (first_plan, first) = stage_file_output(physical(&ctx, &sql).await?)?;
        let (second_plan, second) = stage_file_output(physical(&ctx, &sql).await?)?;
        run(&ctx, &first_plan, attempt(0)).await?;
        run(&ctx, &second_plan, attempt(0)).await?;
        assert_eq!(
            first.commit_once(&[attempt(0)], "driver-1.0")?,
            Committed::Now
        );
        assert_eq!(
            second.commit_once(&[attempt(0)], "driver-1.0")?,
            Committed::Earlier
        );
        assert_eq!(csv_rows(&out), vec!["1", "2"], "one copy of the rows");
        assert!(
            names_in(tmp.path()).iter().all(|n| !n.contains("staging")),
            "{:?}",
            names_in(tmp.path())
        );
        // Another submission (the job run again tomorrow) commits its own.
        let (plan, again) = stage_file_output(physical(&ctx, &sql).await?)?;
        run(&ctx, &plan, attempt(0)).await?;
        assert_eq!(
            again.commit_once(&[attempt(0)], "driver-2.0")?,
            Committed::Now
        );
        assert_eq!(csv_rows(&out), vec!["1", "1", "2", "2"]);
        // A claim left by an attempt that died while committing is refused.
        std::fs::write(tmp.path().join(".out.ember-committed-driver-3.0"), "")?;
        let (plan, doubt) = stage_file_output(physical(&ctx, &sql).await?)?;
        run(&ctx, &plan, attempt(0)).await?;
        let err = doubt.commit_once(&[attempt(0)], "driver-3.0").unwrap_err();
        assert!(matches!(err, EngineError::CommitInDoubt { .. }), "{err}");
        assert_eq!(csv_rows(&out).len(), 4);
        Ok(())
    }

    #[tokio::test]
    async fn abort_leaves_the_destination_absent() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let out = tmp.path().join("out");
        let ctx = SessionContext::new();
        let sql = format!(
            "COPY (VALUES (1),(2)) TO '{}/' STORED AS PARQUET",
            out.display()
        );
        let (plan, staged) = stage_file_output(physical(&ctx, &sql).await?)?;
        run(&ctx, &plan, attempt(0)).await?;
        staged.abort()?;
        assert!(!out.exists());
        assert!(
            names_in(tmp.path()).is_empty(),
            "{:?}",
            names_in(tmp.path())
        );
        Ok(())
    }

    #[tokio::test]
    async fn dropping_an_uncommitted_output_aborts_it() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let ctx = SessionContext::new();
        let sql = format!(
            "COPY (VALUES (1)) TO '{}/out/' STORED AS CSV",
            tmp.path().display()
        );
        let (plan, staged) = stage_file_output(physical(&ctx, &sql).await?)?;
        run(&ctx, &plan, attempt(0)).await?;
        drop(staged);
        assert!(
            names_in(tmp.path()).is_empty(),
            "{:?}",
            names_in(tmp.path())
        );
        Ok(())
    }

    #[tokio::test]
    async fn single_file_output_is_renamed_to_the_destination() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let out = tmp.path().join("x.parquet");
        let ctx = SessionContext::new();
        let sql = format!(
            "COPY (VALUES (1),(2)) TO '{}' STORED AS PARQUET",
            out.display()
        );
        let (plan, staged) = stage_file_output(physical(&ctx, &sql).await?)?;
        run(&ctx, &plan, attempt(0)).await?;
        run(&ctx, &plan, attempt(1)).await?;
        staged.commit(&[attempt(0)])?;

        assert!(out.is_file());
        assert_eq!(names_in(tmp.path()), vec!["x.parquet"]);
        let read = ctx
            .read_parquet(out.to_str().unwrap(), Default::default())
            .await?;
        assert_eq!(read.count().await?, 2);
        Ok(())
    }

    #[tokio::test]
    async fn hive_partitions_keep_their_directories() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let out = tmp.path().join("out");
        let ctx = SessionContext::new();
        let sql = format!(
            "COPY (VALUES (1, 'a'), (2, 'b')) TO '{}/' STORED AS CSV PARTITIONED BY (column2)",
            out.display()
        );
        let (plan, staged) = stage_file_output(physical(&ctx, &sql).await?)?;
        run(&ctx, &plan, attempt(0)).await?;
        staged.commit(&[attempt(0)])?;

        assert_eq!(names_in(&out), vec!["_SUCCESS", "column2=a", "column2=b"]);
        assert_eq!(csv_rows(&out.join("column2=a")), vec!["1"]);
        Ok(())
    }

    #[tokio::test]
    async fn insert_into_a_listing_table_appends_and_keeps_existing_files() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let table = tmp.path().join("t");
        std::fs::create_dir(&table)?;
        std::fs::write(table.join("existing.csv"), "a\n1\n2\n")?;
        let ctx = SessionContext::new();
        ctx.sql(&format!(
            "CREATE EXTERNAL TABLE t (a BIGINT) STORED AS CSV LOCATION '{}/' \
             OPTIONS ('format.has_header' 'true')",
            table.display()
        ))
        .await?;

        let insert = physical(&ctx, "INSERT INTO t VALUES (3), (4)").await?;
        let (plan, staged) = stage_file_output(insert)?;
        run(&ctx, &plan, attempt(0)).await?;
        assert_eq!(names_in(&table), vec!["existing.csv"]);
        staged.commit(&[attempt(0)])?;

        assert_eq!(
            std::fs::read_to_string(table.join("existing.csv"))?,
            "a\n1\n2\n"
        );
        assert_eq!(csv_rows(&table), vec!["1", "2", "3", "4"]);
        assert_eq!(names_in(tmp.path()), vec!["t"]);
        Ok(())
    }

    #[tokio::test]
    async fn plans_without_a_staged_sink_are_unchanged() -> Result<()> {
        let ctx = SessionContext::new();
        let query = physical(&ctx, "SELECT 1").await?;
        assert!(Arc::ptr_eq(
            &isolate_attempt(Arc::clone(&query), attempt(0))?,
            &query
        ));
        let tmp = tempfile::tempdir()?;
        let sql = format!(
            "COPY (VALUES (1)) TO '{}/out/' STORED AS CSV",
            tmp.path().display()
        );
        let unstaged = physical(&ctx, &sql).await?;
        assert!(Arc::ptr_eq(
            &isolate_attempt(Arc::clone(&unstaged), attempt(0))?,
            &unstaged
        ));
        Ok(())
    }

    #[tokio::test]
    async fn a_staged_plan_shipped_to_an_executor_is_still_isolated() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let out = tmp.path().join("out");
        let ctx = SessionContext::new();
        let sql = format!(
            "COPY (VALUES (1),(2)) TO '{}/' STORED AS CSV",
            out.display()
        );
        let (plan, staged) = stage_file_output(physical(&ctx, &sql).await?)?;
        let shipped =
            crate::codec::decode_plan(&crate::codec::encode_plan(plan)?, &ctx.task_ctx())?;
        run(&ctx, &shipped, attempt(4)).await?;
        assert!(
            staged
                .staging_dir()
                .join("attempt-3-0-4")
                .join("out")
                .is_dir()
        );
        staged.commit(&[attempt(4)])?;
        assert_eq!(csv_rows(&out), vec!["1", "2"]);
        Ok(())
    }

    #[tokio::test]
    async fn object_store_destinations_are_refused() -> Result<()> {
        let ctx = SessionContext::new();
        let plan = physical(&ctx, "COPY (VALUES (1)) TO 'memory:///out/' STORED AS CSV").await?;
        let message = stage_file_output(plan).unwrap_err().to_string();
        assert!(message.contains("memory:///out/"), "{message}");
        assert!(
            message.contains("object stores are not supported"),
            "{message}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_sink_ember_cannot_stage_is_refused_by_name() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let ctx = SessionContext::new();
        let sql = format!(
            "COPY (VALUES (1)) TO '{}/out/' STORED AS ARROW",
            tmp.path().display()
        );
        let message = stage_file_output(physical(&ctx, &sql).await?)
            .unwrap_err()
            .to_string();
        assert!(message.contains("ArrowFileSink"), "{message}");
        assert!(names_in(tmp.path()).is_empty());
        Ok(())
    }
}
