//! What the simulations read of a job: how it ended, where its files go,
//! the claims beside them and the rows committed.

use std::path::{Path, PathBuf};

use ember_engine::TaskAttempt;

/// How one job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Pending,
    Succeeded(Vec<String>),
    Failed(String),
}

/// Where job `job` of application `app` writes its rows.
pub fn file_destination(dir: &Path, app: usize, job: usize) -> PathBuf {
    dir.join(format!("app-{app}-job-{job}"))
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
pub fn staged_attempts(staging: &Path) -> Vec<TaskAttempt> {
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
