//! Running a script statement by statement, as `ember submit` does and a
//! cluster-mode driver does: each statement's outcome goes to the caller as
//! it comes, and the first failing statement ends the script with where it
//! is, which one, and why.

use std::time::Instant;

use ember_actors::{JobError, JobRows};
use ember_engine::script::ScriptStatement;

use crate::session::{Mode, Session, SessionError, StatementOutcome};

/// A script's failing statement, worded the same wherever scripts run.
#[derive(Debug, thiserror::Error)]
#[error("{script}:{line}: statement {index} ({summary}) failed:\n  {error}")]
pub struct ScriptFailure {
    /// The script's name (its file, or what the caller calls it).
    pub script: String,
    /// 1-based line the statement starts on.
    pub line: usize,
    /// 1-based position of the statement in the script.
    pub index: usize,
    /// The statement's first line, shortened.
    pub summary: String,
    #[source]
    pub error: SessionError,
}

/// Whether the script goes on after a statement's outcome was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop here, successfully (the reader of the output went away).
    Stop,
}

/// How a script ended when none of its statements failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptEnd {
    /// Every statement ran.
    Finished,
    /// The caller stopped the script after this many statements.
    Stopped { after: usize },
}

/// Why a script did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Statement(#[from] ScriptFailure),
    /// The caller could not take a statement's outcome.
    #[error(transparent)]
    Sink(E),
}

/// Why a sink could not take a statement's outcome.
#[derive(Debug)]
pub enum SinkError<E> {
    /// The rows could not all be read: the statement failed.
    Rows(JobError),
    /// The sink's own failure (the output could not be written).
    Sink(E),
}

impl<E> From<JobError> for SinkError<E> {
    fn from(e: JobError) -> Self {
        Self::Rows(e)
    }
}

/// Runs `statements` of the script named `script` in order. `sink` gets
/// each statement with its outcome, its rows as a stream to take as they
/// are read, and when the statement started.
pub async fn run_script<E: std::error::Error + 'static>(
    session: &mut Session,
    script: &str,
    statements: &[ScriptStatement],
    mode: Mode,
    mut sink: impl AsyncFnMut(
        &ScriptStatement,
        StatementOutcome<JobRows>,
        Instant,
    ) -> Result<Flow, SinkError<E>>,
) -> Result<ScriptEnd, ScriptError<E>> {
    for (done, statement) in statements.iter().enumerate() {
        let started = Instant::now();
        let failed = |error| ScriptFailure {
            script: script.to_string(),
            line: statement.line,
            index: statement.index,
            summary: statement.summary(),
            error,
        };
        let outcome = session
            .execute_stream(&statement.text, mode)
            .await
            .map_err(failed)?;
        let flow = sink(statement, outcome, started)
            .await
            .map_err(|e| match e {
                SinkError::Rows(e) => ScriptError::Statement(failed(e.into())),
                SinkError::Sink(e) => ScriptError::Sink(e),
            })?;
        match flow {
            Flow::Continue => {}
            Flow::Stop => return Ok(ScriptEnd::Stopped { after: done + 1 }),
        }
    }
    // The script's streaming queries run on past its last statement, until
    // each ends; one that failed fails the statement that started it.
    if let Err((name, error)) = session.await_background_queries().await {
        let started = statements.iter().rev().find(|s| {
            crate::streaming::parse_start(&s.text)
                .ok()
                .flatten()
                .is_some_and(|q| q.name == name)
        });
        if let Some(statement) = started.or(statements.last()) {
            return Err(ScriptError::Statement(ScriptFailure {
                script: script.to_string(),
                line: statement.line,
                index: statement.index,
                summary: statement.summary(),
                error,
            }));
        }
    }
    Ok(ScriptEnd::Finished)
}

/// A failing statement's message, for callers that run statements their
/// own way (the shell): the same words as [`ScriptFailure`]'s.
pub fn statement_failed(
    script: &str,
    statement: &ScriptStatement,
    error: &dyn std::fmt::Display,
) -> String {
    format!(
        "{script}:{}: statement {} ({}) failed:\n  {error}",
        statement.line,
        statement.index,
        statement.summary()
    )
}
