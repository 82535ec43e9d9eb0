//! Streaming queries in the background, as Spark's `start()` runs them:
//! `START STREAMING QUERY` returns once the query is checked and its
//! checkpoint read, and its batches go on in a session of their own (the
//! same application, a copy of the catalog) while statements run in front.
//! `SHOW STREAMING QUERIES` (`\streams` in the shell) lists them with their
//! last batch, `STOP STREAMING QUERY` stops one, `AWAIT STREAMING QUERY`
//! waits for one to end and fails as it failed; a script ends only when
//! its queries have.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, Float64Array, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use ember_actors::cluster_manager::StreamStatus;

use super::{BatchProgress, PROGRESS_KEPT, StreamingQuery, parse_duration};
use crate::session::{Session, SessionError};

/// How long stopping a query waits for its batch in progress to end
/// (its jobs are cancelled first, so this is a bound, not a wait).
const STOP_BOUND: Duration = Duration::from_secs(30);

/// Where a streaming query is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryState {
    Running,
    /// Stopped by `STOP STREAMING QUERY`, Ctrl-C or the session's end.
    Stopped,
    /// Its trigger (ONCE, AVAILABLE NOW) or `STOP AFTER` ended it.
    Finished,
    Failed,
}

impl std::fmt::Display for QueryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Finished => "finished",
            Self::Failed => "failed",
        })
    }
}

/// A streaming query of this session and its recent batches.
#[derive(Debug, Clone)]
pub struct QueryStatus {
    pub name: String,
    pub sink: String,
    pub state: QueryState,
    /// Why it failed.
    pub reason: Option<String>,
    /// Batches committed since it started, and their input rows.
    pub batches: u64,
    pub input_rows: u64,
    /// The last [`PROGRESS_KEPT`] batches, oldest first.
    pub recent: VecDeque<BatchProgress>,
}

impl QueryStatus {
    fn new(query: &StreamingQuery) -> Self {
        Self {
            name: query.name.clone(),
            sink: query.sink.describe(),
            state: QueryState::Running,
            reason: None,
            batches: 0,
            input_rows: 0,
            recent: VecDeque::new(),
        }
    }

    /// As `ember status` shows it.
    pub fn report(&self) -> StreamStatus {
        let last = self.recent.back();
        StreamStatus {
            name: self.name.clone(),
            state: self.state.to_string(),
            reason: self.reason.clone(),
            sink: self.sink.clone(),
            batches: self.batches,
            input_rows: self.input_rows,
            last_batch: last.map(|p| p.batch),
            last_input_rows: last.map_or(0, |p| p.input_rows),
            last_rows_per_second: last.map_or(0, |p| p.processed_rows_per_second as u64),
            last_duration_ms: last.map_or(0, |p| p.duration.as_millis() as u64),
            watermark: last.and_then(|p| p.watermark_micros).map(rfc3339_micros),
            state_rows: last.map_or(0, |p| p.state_rows),
        }
    }
}

fn rfc3339_micros(micros: i64) -> String {
    let nanos = i128::from(micros) * 1000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| micros.to_string())
}

/// Every query's status, shared by the session and its background queries.
pub(crate) type Statuses = Arc<Mutex<BTreeMap<String, QueryStatus>>>;

/// A background query's link to the session that started it.
pub(crate) struct Parent {
    /// Set when everything stops (Ctrl-C in `ember submit`).
    pub(crate) stop_all: Arc<AtomicBool>,
    /// Where a memory sink's table goes: the session in front.
    pub(crate) publish: SessionContext,
    pub(crate) statuses: Statuses,
}

/// The session's background queries.
#[derive(Default)]
pub(crate) struct Background {
    statuses: Statuses,
    running: BTreeMap<String, Running>,
}

struct Running {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// `STOP STREAMING QUERY name`, `AWAIT STREAMING QUERY name [TIMEOUT
/// 'd']`, `SHOW STREAMING QUERIES`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Control {
    Stop(String),
    Await(String, Option<Duration>),
    Show,
}

/// The control statement `sql` is, if it is one.
pub(crate) fn parse_control(sql: &str) -> Result<Option<Control>, SessionError> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(None);
    };
    let mut items = tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::SemiColon));
    let mut word = || match items.next() {
        Some(Token::Word(w)) => Some((w.value.to_ascii_uppercase(), w.value)),
        Some(Token::SingleQuotedString(s)) => Some((String::new(), s)),
        _ => None,
    };
    let verb = word().map(|(upper, _)| upper);
    let (Some(verb), Some((streaming, _))) = (verb, word()) else {
        return Ok(None);
    };
    if streaming != "STREAMING" {
        return Ok(None);
    }
    let what = word().map(|(upper, _)| upper);
    let bad = |why: &str| {
        Err(SessionError::Unsupported(format!(
            "{verb} STREAMING: {why}"
        )))
    };
    match (verb.as_str(), what.as_deref()) {
        ("SHOW", Some("QUERIES")) => match word() {
            None => Ok(Some(Control::Show)),
            Some(_) => bad("SHOW STREAMING QUERIES takes nothing more"),
        },
        ("STOP" | "AWAIT", Some("QUERY")) => {
            let Some((_, name)) = word() else {
                return bad("the query's name comes after QUERY");
            };
            if verb == "STOP" {
                return match word() {
                    None => Ok(Some(Control::Stop(name))),
                    Some(_) => bad("STOP STREAMING QUERY name takes nothing more"),
                };
            }
            match word() {
                None => Ok(Some(Control::Await(name, None))),
                Some((timeout, _)) if timeout == "TIMEOUT" => match word() {
                    Some((upper, text)) if upper.is_empty() => {
                        let limit = parse_duration(&text)
                            .map_err(|e| SessionError::Unsupported(format!("AWAIT: {e}")))?;
                        Ok(Some(Control::Await(name, Some(limit))))
                    }
                    _ => bad("TIMEOUT takes a quoted duration, such as TIMEOUT '10 seconds'"),
                },
                Some(_) => bad("AWAIT STREAMING QUERY name [TIMEOUT '10 seconds']"),
            }
        }
        ("SHOW" | "STOP" | "AWAIT", _) => {
            bad("SHOW STREAMING QUERIES, STOP STREAMING QUERY name or AWAIT STREAMING QUERY name")
        }
        _ => Ok(None),
    }
}

impl Session {
    /// Starts `query` in the background once it is checked and its
    /// checkpoint read (errors in either come back here); its batches run
    /// while the session goes on. A query of the same name must not be
    /// running.
    pub async fn start_streaming_query(
        &mut self,
        query: StreamingQuery,
    ) -> Result<(), SessionError> {
        self.reap_background();
        if self.background.running.contains_key(&query.name) {
            return Err(SessionError::Unsupported(format!(
                "streaming query {} is already running: STOP STREAMING QUERY {} first, or give \
                 this one another name",
                query.name, query.name
            )));
        }
        let statuses = self.statuses();
        let parent = Parent {
            stop_all: Arc::clone(&self.stop_streams),
            publish: self.context().clone(),
            statuses: Arc::clone(&statuses),
        };
        let mut sibling = self.sibling(&query.name, parent).await?;
        let prepared = sibling.prepare_streaming_query(&query).await?;
        let stop = Arc::clone(&sibling.stop_streams);
        lock(&statuses).insert(query.name.clone(), QueryStatus::new(&query));
        self.report_streams();
        tracing::info!(query = %query.name, sink = %query.sink.describe(), "streaming query started");
        let name = query.name.clone();
        let task = tokio::task::spawn_local(async move {
            let ran = sibling.run_prepared(&query, prepared).await;
            let stopped = sibling.stopping();
            let (state, reason) = match ran {
                Ok(_) => (QueryState::Finished, None),
                // A batch cut short by the stop runs again on restart.
                Err(_) if stopped => (QueryState::Stopped, None),
                Err(e) => (QueryState::Failed, Some(e.to_string())),
            };
            match &reason {
                Some(why) => {
                    tracing::error!(query = %query.name, error = %why, "streaming query failed")
                }
                None => tracing::info!(query = %query.name, %state, "streaming query ended"),
            }
            if let Some(status) = lock(&statuses).get_mut(&query.name) {
                status.state = state;
                status.reason = reason;
            }
            sibling.report_streams();
        });
        self.background.running.insert(name, Running { stop, task });
        Ok(())
    }

    /// Every streaming query this session started, running or ended.
    pub fn streaming_queries(&self) -> Vec<QueryStatus> {
        lock(&self.statuses()).values().cloned().collect()
    }

    /// Stops a background query: its batch in progress is cancelled (it
    /// runs again on restart) and its task awaited.
    pub async fn stop_streaming_query(&mut self, name: &str) -> Result<(), SessionError> {
        let Some(running) = self.background.running.remove(name) else {
            let ended = lock(&self.statuses()).get(name).map(|s| s.state);
            return match ended {
                Some(state) => {
                    tracing::info!(query = name, %state, "streaming query already ended");
                    Ok(())
                }
                None => Err(self.no_such_query(name)),
            };
        };
        self.stop_running(name, running).await;
        Ok(())
    }

    async fn stop_running(&self, name: &str, running: Running) {
        running.stop.store(true, Ordering::Relaxed);
        self.driver().do_send(ember_actors::driver::CancelJobs {
            reason: format!("streaming query {name} was stopped"),
            scope: ember_actors::driver::CancelScope::Group(Some(name.to_string())),
        });
        if tokio::time::timeout(STOP_BOUND, running.task)
            .await
            .is_err()
        {
            tracing::warn!(
                query = name,
                "streaming query did not stop within {STOP_BOUND:?}"
            );
        }
    }

    /// Waits until a query ends (or `limit` passes: then it still runs);
    /// fails as the query failed.
    pub async fn await_streaming_query(
        &mut self,
        name: &str,
        limit: Option<Duration>,
    ) -> Result<(), SessionError> {
        if let Some(running) = self.background.running.get_mut(name) {
            match limit {
                Some(limit) => {
                    if tokio::time::timeout(limit, &mut running.task)
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
                None => {
                    let _ = (&mut running.task).await;
                }
            }
            self.background.running.remove(name);
        }
        let ended = lock(&self.statuses())
            .get(name)
            .map(|s| (s.state, s.reason.clone()));
        match ended {
            Some((QueryState::Failed, reason)) => Err(SessionError::Unsupported(format!(
                "streaming query {name} failed: {}",
                reason.as_deref().unwrap_or("(no reason given)")
            ))),
            Some(_) => Ok(()),
            None => Err(self.no_such_query(name)),
        }
    }

    /// Waits for every background query to end (a script's end, as
    /// Spark's `awaitAnyTermination` at the end of an application); the
    /// first that failed fails it, naming the query.
    pub async fn await_background_queries(&mut self) -> Result<(), (String, SessionError)> {
        let names: Vec<String> = self.background.running.keys().cloned().collect();
        let mut first = None;
        for name in names {
            if let Err(e) = self.await_streaming_query(&name, None).await {
                first.get_or_insert((name, e));
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Stops every background query (the session is ending).
    pub(crate) async fn stop_background_queries(&mut self) {
        let running = std::mem::take(&mut self.background.running);
        for (name, running) in running {
            self.stop_running(&name, running).await;
        }
    }

    /// `SHOW STREAMING QUERIES`: a row per query and its last batch.
    pub(crate) fn show_streaming_queries(&self) -> Result<(SchemaRef, RecordBatch), SessionError> {
        let statuses = self.streaming_queries();
        let text = |f: &dyn Fn(&QueryStatus) -> Option<String>| -> ArrayRef {
            Arc::new(statuses.iter().map(f).collect::<StringArray>())
        };
        let number = |f: &dyn Fn(&QueryStatus) -> Option<u64>| -> ArrayRef {
            Arc::new(statuses.iter().map(f).collect::<UInt64Array>())
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("state", DataType::Utf8, false),
            Field::new("sink", DataType::Utf8, false),
            Field::new("batches", DataType::UInt64, false),
            Field::new("input_rows", DataType::UInt64, false),
            Field::new("last_batch", DataType::UInt64, true),
            Field::new("last_input_rows", DataType::UInt64, true),
            Field::new("rows_per_second", DataType::Float64, true),
            Field::new("last_duration_ms", DataType::UInt64, true),
            Field::new("watermark", DataType::Utf8, true),
            Field::new("state_rows", DataType::UInt64, true),
            Field::new("reason", DataType::Utf8, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            text(&|s| Some(s.name.clone())),
            text(&|s| Some(s.state.to_string())),
            text(&|s| Some(s.sink.clone())),
            number(&|s| Some(s.batches)),
            number(&|s| Some(s.input_rows)),
            number(&|s| s.recent.back().map(|p| p.batch)),
            number(&|s| s.recent.back().map(|p| p.input_rows)),
            Arc::new(
                statuses
                    .iter()
                    .map(|s| s.recent.back().map(|p| p.processed_rows_per_second.round()))
                    .collect::<Float64Array>(),
            ),
            number(&|s| s.recent.back().map(|p| p.duration.as_millis() as u64)),
            text(&|s| {
                s.recent
                    .back()
                    .and_then(|p| p.watermark_micros)
                    .map(rfc3339_micros)
            }),
            number(&|s| s.recent.back().map(|p| p.state_rows)),
            text(&|s| s.reason.clone()),
        ];
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)
            .map_err(datafusion::error::DataFusionError::from)?;
        Ok((schema, batch))
    }

    /// Whether the running query is told to stop.
    pub(crate) fn stopping(&self) -> bool {
        self.stop_streams.load(Ordering::Relaxed)
            || self
                .parent
                .as_ref()
                .is_some_and(|p| p.stop_all.load(Ordering::Relaxed))
    }

    /// Keeps a committed batch's progress in the query's status, and tells
    /// the cluster.
    pub(crate) fn report_batch(&self, query: &StreamingQuery, batch: &BatchProgress) {
        let statuses = self.statuses();
        {
            let mut statuses = lock(&statuses);
            let status = statuses
                .entry(query.name.clone())
                .or_insert_with(|| QueryStatus::new(query));
            status.batches += 1;
            status.input_rows += batch.input_rows;
            status.recent.push_back(batch.clone());
            while status.recent.len() > PROGRESS_KEPT {
                status.recent.pop_front();
            }
        }
        self.report_streams();
    }

    fn statuses(&self) -> Statuses {
        match &self.parent {
            Some(parent) => Arc::clone(&parent.statuses),
            None => Arc::clone(&self.background.statuses),
        }
    }

    /// Tells the cluster manager the queries' state, for `ember status`.
    fn report_streams(&self) {
        let reports = lock(&self.statuses())
            .values()
            .map(QueryStatus::report)
            .collect();
        self.report_to_cluster(reports);
    }

    /// Forgets the tasks of queries that ended on their own.
    fn reap_background(&mut self) {
        self.background
            .running
            .retain(|_, running| !running.task.is_finished());
    }

    fn no_such_query(&self, name: &str) -> SessionError {
        let known: Vec<String> = lock(&self.statuses()).keys().cloned().collect();
        SessionError::Unsupported(format!(
            "no streaming query named {name} in this session{}",
            if known.is_empty() {
                String::new()
            } else {
                format!(" (there are: {})", known.join(", "))
            }
        ))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
