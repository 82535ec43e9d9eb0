//! One job of the workload on a running driver: its rows collected, or
//! written to files through the output commit protocol and committed once
//! under a claim. Client-mode applications and simulated cluster-mode
//! drivers both run their jobs here.

use std::path::{Path, PathBuf};

use actix::prelude::*;
use ember_actors::driver::{Driver, SubmitJob};
use ember_engine::{Committed, StagePlanner, TaskAttempt, stage_file_output};

use crate::workload::lines;

/// How one job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Pending,
    Succeeded(Vec<String>),
    Failed(String),
}

pub async fn run_job(
    ctx: &datafusion::prelude::SessionContext,
    planner: &mut StagePlanner,
    driver: &Addr<Driver>,
    sql: &str,
) -> JobOutcome {
    let planned = async {
        let plan = ctx
            .sql(sql)
            .await
            .map_err(|e| e.to_string())?
            .create_physical_plan()
            .await
            .map_err(|e| e.to_string())?;
        planner.plan(plan).map_err(|e| e.to_string())
    };
    let graph = match planned.await {
        Ok(g) => g,
        Err(e) => return JobOutcome::Failed(format!("planning: {e}")),
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if driver.send(SubmitJob { graph, reply }).await.is_err() {
        return JobOutcome::Failed("the driver is gone".into());
    }
    match answer.await {
        Ok(Ok(output)) => JobOutcome::Succeeded(lines(&output.batches)),
        Ok(Err(e)) => JobOutcome::Failed(e.to_string()),
        Err(_) => JobOutcome::Failed("the driver stopped before answering".into()),
    }
}

/// Where job `job` of application `app` writes its rows.
pub fn file_destination(dir: &Path, app: usize, job: usize) -> PathBuf {
    dir.join(format!("app-{app}-job-{job}"))
}

/// A job that writes its rows to files through the commit protocol.
pub struct FileJob {
    pub destination: PathBuf,
    /// The output's claim: `<application>.<job>` for a client-mode
    /// application, `<submission>.<job>` for every attempt of a cluster-mode
    /// driver.
    pub claim: String,
    /// The deliberate bug: commit every attempt staged, not the ones the
    /// job used.
    pub commit_every_attempt: bool,
}

/// Runs `sql` as `COPY (sql) TO` a directory and commits its output once
/// under the job's claim: now, or by an earlier attempt of the claim.
pub async fn write_job(
    ctx: &datafusion::prelude::SessionContext,
    planner: &mut StagePlanner,
    driver: &Addr<Driver>,
    sql: &str,
    job: &FileJob,
) -> Result<Committed, String> {
    let copy = format!(
        "COPY ({sql}) TO '{}/' STORED AS CSV OPTIONS ('format.has_header' 'false')",
        job.destination.display()
    );
    let planned = async {
        let plan = ctx
            .sql(&copy)
            .await
            .map_err(|e| e.to_string())?
            .create_physical_plan()
            .await
            .map_err(|e| e.to_string())?;
        let (plan, staged) = stage_file_output(plan).map_err(|e| e.to_string())?;
        let graph = planner.plan(plan).map_err(|e| e.to_string())?;
        Ok::<_, String>((graph, staged))
    };
    let (graph, staged) = match planned.await {
        Ok(planned) => planned,
        Err(e) => return Err(format!("planning: {e}")),
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let output = if driver.send(SubmitJob { graph, reply }).await.is_err() {
        Err("the driver is gone".to_string())
    } else {
        match answer.await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the driver stopped before answering".to_string()),
        }
    };
    let output = match output {
        Ok(output) => output,
        Err(why) => {
            if let Err(e) = staged.abort() {
                tracing::warn!(error = %e, "could not remove a failed job's staged output");
            }
            return Err(why);
        }
    };
    let committed = if job.commit_every_attempt {
        let attempts = staged_attempts(staged.staging_dir());
        staged.commit(&attempts).map(|()| Committed::Now)
    } else {
        let attempts: Vec<TaskAttempt> = output.committed.iter().map(|&id| id.into()).collect();
        staged.commit_once(&attempts, &job.claim)
    };
    committed.map_err(|e| format!("commit: {e}"))
}

/// A claim marker beside a destination: the claim it names and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMarker {
    pub claim: String,
    pub says: String,
}

/// The claim markers of job `job` of application `app`
/// (`.app-A-job-J.ember-committed-<claim>`), by claim.
pub fn output_claims(dir: &Path, app: usize, job: usize) -> Vec<ClaimMarker> {
    let prefix = format!(".app-{app}-job-{job}.ember-committed-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut claims: Vec<ClaimMarker> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let claim = name.strip_prefix(&prefix)?.to_string();
            let says = std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .trim()
                .to_string();
            Some(ClaimMarker { claim, says })
        })
        .collect();
    claims.sort_by(|a, b| a.claim.cmp(&b.claim));
    claims
}

/// Every attempt with a directory in `staging` (`attempt-S-P-A`).
fn staged_attempts(staging: &Path) -> Vec<TaskAttempt> {
    let mut attempts = Vec::new();
    let Ok(entries) = std::fs::read_dir(staging) else {
        return attempts;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let numbers: Vec<u64> = name
            .strip_prefix("attempt-")
            .unwrap_or_default()
            .split('-')
            .filter_map(|n| n.parse().ok())
            .collect();
        if let [stage, partition, attempt] = numbers[..] {
            attempts.push(TaskAttempt {
                stage: stage as usize,
                partition: partition as usize,
                attempt: attempt as u32,
            });
        }
    }
    attempts.sort_by_key(|a| (a.stage, a.partition, a.attempt));
    attempts
}

/// The rows of every data file under `destination` (not hidden ones, not
/// `_SUCCESS`), as sorted `|`-separated lines.
pub fn committed_rows(destination: &Path) -> std::io::Result<Vec<String>> {
    let mut rows = Vec::new();
    let mut dirs = vec![destination.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
                continue;
            }
            let text = std::fs::read_to_string(entry.path())?;
            rows.extend(
                text.lines()
                    .filter(|l| !l.is_empty())
                    .map(|l| l.replace(',', "|")),
            );
        }
    }
    rows.sort();
    Ok(rows)
}
