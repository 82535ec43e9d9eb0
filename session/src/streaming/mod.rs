//! Streaming queries in micro-batches, as Spark's Structured Streaming runs
//! them: a query over unbounded sources is run again and again, each run (a
//! batch) an ordinary Ember job over the data that arrived since the last,
//! and its progress is written ahead to a checkpoint so that a restarted
//! query goes on exactly where it stopped.
//!
//! Per batch, in this order:
//! 1. the sources say what is new (files not yet taken, rate-source rows up
//!    to now) and the batch's offsets are written to `offsets/N`;
//! 2. each source is bound, for this batch only, to exactly those offsets,
//!    and the query runs as a job;
//! 3. the sink takes the rows (a file sink through the output commit, into
//!    a directory of its own per batch, replacing whatever an earlier
//!    attempt of the same batch left);
//! 4. `commits/N` is written.
//!
//! A query restarted with offsets `N` and no commit `N` runs batch `N`
//! again with the same offsets: its file output is replaced, never added
//! to, so every input row's result lands exactly once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{CreateExternalTable, DdlStatement, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use ember_engine::stream_state::store::{self, write_atomically};
use ember_engine::stream_state::{MergeSpec, StateMergeExec};
use serde::{Deserialize, Serialize};

use crate::session::{Mode, Session, SessionError, StatementOutcome};

mod background;
mod counting;
mod kafka;
mod state;
mod windows;

pub(crate) use windows::register as register_functions;

pub(crate) use background::{Background, Control, Parent, parse_control};
pub use background::{QueryState, QueryStatus};
pub(crate) use kafka::KafkaTopic;

/// Streaming-only options of a source, taken out before DataFusion sees
/// the rest.
const MAX_FILES_PER_TRIGGER: &str = "maxfilespertrigger";
const ROWS_PER_SECOND: &str = "rowspersecond";
const SUBSCRIBE: &str = "subscribe";
const STARTING_OFFSETS: &str = "startingoffsets";
const MAX_OFFSETS_PER_TRIGGER: &str = "maxoffsetspertrigger";
const VALUE_FORMAT: &str = "valueformat";

/// A source declared with `CREATE UNBOUNDED EXTERNAL TABLE`.
#[derive(Debug, Clone)]
pub struct StreamSource {
    /// The declaration, with the streaming options taken out.
    create: CreateExternalTable,
    kind: SourceKind,
}

#[derive(Debug, Clone, PartialEq)]
enum SourceKind {
    /// Files arriving in a directory (CSV, JSON lines, Parquet).
    Files {
        dir: PathBuf,
        max_files_per_trigger: Option<usize>,
    },
    /// `rowsPerSecond` rows a second: `value BIGINT`, `timestamp`.
    Rate { rows_per_second: u64 },
    /// Lines of text read from a TCP server: `value VARCHAR`. For tests
    /// and demos, as Spark's: lines not yet committed are lost with the
    /// driver.
    Socket { address: String },
    /// A Kafka topic: Spark's columns (`key`, `value`, `topic`,
    /// `partition`, `offset`, `timestamp`), or with `valueFormat` `json`
    /// the declared columns, read from each value.
    Kafka {
        brokers: String,
        topic: String,
        /// Where a query with no checkpointed offsets begins.
        from_latest: bool,
        max_offsets_per_trigger: Option<u64>,
        json: bool,
    },
}

impl StreamSource {
    /// The source `create` declares; `None` when it is not unbounded.
    pub(crate) fn declare(create: &CreateExternalTable) -> Result<Option<Self>, SessionError> {
        if !create.unbounded {
            return Ok(None);
        }
        let mut create = create.clone();
        let max_files = take_option(&mut create.options, MAX_FILES_PER_TRIGGER);
        let rate = take_option(&mut create.options, ROWS_PER_SECOND);
        let subscribe = take_option(&mut create.options, SUBSCRIBE);
        let starting = take_option(&mut create.options, STARTING_OFFSETS);
        let max_offsets = take_option(&mut create.options, MAX_OFFSETS_PER_TRIGGER);
        let value_format = take_option(&mut create.options, VALUE_FORMAT);
        let number = |key: &str, value: Option<String>| -> Result<Option<u64>, SessionError> {
            value
                .map(|v| {
                    v.trim().parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        SessionError::Unsupported(format!(
                            "stream {}: option '{key}' must be a whole number above 0, not '{v}'",
                            create_name(&create)
                        ))
                    })
                })
                .transpose()
        };
        let kind = if create.file_type.eq_ignore_ascii_case("KAFKA") {
            let name = create_name(&create);
            let bad = |why: String| SessionError::Unsupported(format!("stream {name}: {why}"));
            let brokers = create.locations.first().cloned().unwrap_or_default();
            if !brokers.contains(':') {
                return Err(bad(format!(
                    "a Kafka source's LOCATION is 'host:port[,host:port...]', not '{brokers}'"
                )));
            }
            let topic = subscribe.ok_or_else(|| {
                bad("a Kafka source needs OPTIONS ('subscribe' 'topic')".to_string())
            })?;
            let from_latest = match starting.as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("latest") => true,
                Some("earliest") => false,
                Some(other) => {
                    return Err(bad(format!(
                        "'startingOffsets' is 'earliest' or 'latest', not '{other}'"
                    )));
                }
            };
            let json = match value_format
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None => false,
                Some("json") => true,
                Some(other) => {
                    return Err(bad(format!(
                        "'valueFormat' is 'json' (values read into the declared columns), not \
                         '{other}'; leave it out to get the raw key and value"
                    )));
                }
            };
            let declared = !create.schema.fields().is_empty();
            if json != declared {
                return Err(bad(if json {
                    "'valueFormat' 'json' reads each value into the columns declared: declare \
                     them, as in CREATE UNBOUNDED EXTERNAL TABLE news (id BIGINT, title VARCHAR) \
                     STORED AS KAFKA ..."
                        .to_string()
                } else {
                    "a Kafka source without 'valueFormat' 'json' has Spark's columns (key, value, \
                     topic, partition, offset, timestamp): leave the columns out, or add \
                     OPTIONS ('valueFormat' 'json') to read each value into them"
                        .to_string()
                }));
            }
            SourceKind::Kafka {
                brokers,
                topic,
                from_latest,
                max_offsets_per_trigger: number("maxOffsetsPerTrigger", max_offsets)?,
                json,
            }
        } else if create.file_type.eq_ignore_ascii_case("SOCKET") {
            let address = create.locations.first().cloned().unwrap_or_default();
            if address.parse::<std::net::SocketAddr>().is_err() && !address.contains(':') {
                return Err(SessionError::Unsupported(format!(
                    "stream {}: a socket source's LOCATION is HOST:PORT, not '{address}'",
                    create_name(&create)
                )));
            }
            SourceKind::Socket { address }
        } else if create.file_type.eq_ignore_ascii_case("RATE") {
            SourceKind::Rate {
                rows_per_second: number("rowsPerSecond", rate)?.unwrap_or(1),
            }
        } else {
            let location = create.locations.first().cloned().unwrap_or_default();
            let dir = PathBuf::from(location.strip_prefix("file://").unwrap_or(&location));
            if !dir.is_dir() {
                return Err(SessionError::Unsupported(format!(
                    "stream {}: LOCATION '{location}' must be an existing directory that files \
                     arrive in",
                    create_name(&create)
                )));
            }
            SourceKind::Files {
                dir,
                max_files_per_trigger: number("maxFilesPerTrigger", max_files)?
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            }
        };
        Ok(Some(Self { create, kind }))
    }

    fn name(&self) -> String {
        create_name(&self.create)
    }
}

/// Takes option `key` (in any case, with or without a `format.` prefix)
/// out of `options`.
fn take_option(
    options: &mut std::collections::HashMap<String, String>,
    key: &str,
) -> Option<String> {
    let found = options.keys().find(|k| names_option(k, key)).cloned();
    found.and_then(|k| options.remove(&k))
}

/// Whether option name `name` is `key`, in any case, with or without its
/// `format.` prefix.
fn names_option(name: &str, key: &str) -> bool {
    name.rsplit('.')
        .next()
        .unwrap_or(name)
        .eq_ignore_ascii_case(key)
}

fn create_name(create: &CreateExternalTable) -> String {
    create.name.to_string()
}

/// Where a batch's rows of one source begin and end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum SourceOffset {
    /// The files this batch takes, in order.
    Files { files: Vec<String> },
    /// Rows `start..end`, row `v` stamped `origin_micros + v / rate`.
    Rate {
        start: u64,
        end: u64,
        origin_micros: i64,
        rows_per_second: u64,
    },
    /// Lines `start..end` read from the socket since the query started.
    Lines { start: u64, end: u64 },
    /// Records `start..end` of each partition.
    Kafka { ranges: BTreeMap<i32, (i64, i64)> },
}

impl SourceOffset {
    fn is_empty(&self) -> bool {
        match self {
            Self::Files { files } => files.is_empty(),
            Self::Rate { start, end, .. } | Self::Lines { start, end } => start >= end,
            Self::Kafka { ranges } => ranges.values().all(|(start, end)| start >= end),
        }
    }
}

/// Lines a socket source has read, numbered from `first`.
#[derive(Debug, Default)]
pub(crate) struct SocketLines {
    first: u64,
    lines: Vec<String>,
}

type Sockets = BTreeMap<String, Arc<std::sync::Mutex<SocketLines>>>;

/// Connects to `address` and reads its lines into a buffer, on the
/// current runtime, until the server closes the connection.
async fn open_socket(
    address: &str,
    first: u64,
) -> Result<Arc<std::sync::Mutex<SocketLines>>, SessionError> {
    use tokio::io::AsyncBufReadExt;
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(address),
    )
    .await
    .map_err(|_| {
        SessionError::Unsupported(format!("socket source {address}: no answer within 10 s"))
    })?
    .map_err(|e| SessionError::Unsupported(format!("socket source {address}: {e}")))?;
    let buffer = Arc::new(std::sync::Mutex::new(SocketLines {
        first,
        ..SocketLines::default()
    }));
    let filling = Arc::clone(&buffer);
    let address = address.to_string();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stream).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => filling
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .lines
                    .push(line),
                Ok(None) => {
                    tracing::info!(%address, "socket source: the server closed the connection");
                    return;
                }
                Err(e) => {
                    tracing::warn!(%address, error = %e, "socket source: reading stopped");
                    return;
                }
            }
        }
    });
    Ok(buffer)
}

/// One entry of the offset log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct BatchOffsets {
    batch: u64,
    sources: BTreeMap<String, SourceOffset>,
    /// The event-time watermark in effect for the batch, in microseconds.
    #[serde(default)]
    watermark_micros: Option<i64>,
}

/// One entry of the commit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct BatchCommit {
    /// The watermark the next batch runs with.
    #[serde(default)]
    next_watermark_micros: Option<i64>,
}

/// What a checkpoint belongs to: a restarted query must match it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Metadata {
    name: String,
    sink: String,
    sources: Vec<String>,
}

/// When a streaming query runs its next batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// As soon as the last one ended and there is new data.
    AsFastAsPossible,
    /// At most one batch per interval.
    ProcessingTime(Duration),
    /// One batch of what is there, then stop.
    Once,
    /// Batches until everything there now is taken (within the sources'
    /// limits per batch), then stop.
    AvailableNow,
}

/// Where a streaming query's rows go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// Files under a directory, a subdirectory `batch=N` per batch.
    Files { format: String, dir: PathBuf },
    /// Printed on standard output, a heading per batch.
    Console,
    /// A table of the query's name in this session.
    Memory,
    /// The function given to [`Session::run_streaming_query_with`], with
    /// each batch's id and rows (Spark's `foreachBatch`): at least once, so
    /// it should ignore a batch id it has already taken.
    ForeachBatch,
    /// Records produced to a Kafka topic: at least once, each with the
    /// batch id in an `ember.batch` header.
    Kafka { brokers: String, topic: String },
}

/// What [`Sink::ForeachBatch`] calls with each batch's id and rows; an
/// error stops the query (the batch runs again on restart).
pub type ForeachBatch = Box<dyn FnMut(u64, &[RecordBatch]) -> Result<(), String> + Send>;

impl Sink {
    fn describe(&self) -> String {
        match self {
            Self::Files { format, dir } => format!("{format} files in {}", dir.display()),
            Self::Console => "console".to_string(),
            Self::Memory => "memory".to_string(),
            Self::ForeachBatch => "foreach_batch".to_string(),
            Self::Kafka { brokers, topic } => format!("kafka topic {topic} at {brokers}"),
        }
    }
}

pub use ember_engine::stream_state::OutputMode;

/// A `START STREAMING QUERY` statement.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamingQuery {
    pub name: String,
    pub trigger: Trigger,
    pub checkpoint: Option<PathBuf>,
    pub output_mode: OutputMode,
    pub sink: Sink,
    /// Stop after this long, whatever the trigger.
    pub stop_after: Option<Duration>,
    /// The event-time column and how late its rows may come.
    pub watermark: Option<(String, Duration)>,
    /// The query, as written.
    pub sql: String,
}

/// What one batch did, as Spark's progress reports it; the checkpoint's
/// `progress` file keeps the last [`PROGRESS_KEPT`] as JSON lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchProgress {
    pub batch: u64,
    /// When it ended, in microseconds since the Unix epoch.
    pub ended_micros: i64,
    /// Files the batch took from file sources.
    pub input_files: usize,
    /// Rows the batch took from rate and socket sources.
    pub input_rows: u64,
    pub output_rows: u64,
    /// Its rows processed per second (input rows over its duration).
    pub processed_rows_per_second: f64,
    #[serde(with = "millis")]
    pub duration: Duration,
    /// The event-time watermark it ran with, in microseconds.
    pub watermark_micros: Option<i64>,
    /// Groups (or distinct rows) kept in the state after it.
    pub state_rows: u64,
    /// Whether it ran again offsets an earlier run wrote ahead.
    pub replayed: bool,
}

/// Progress entries a checkpoint keeps.
pub const PROGRESS_KEPT: usize = 100;

mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms: u64 = serde::Deserialize::deserialize(d)?;
        Ok(Duration::from_millis(ms))
    }
}

/// Parses `START STREAMING QUERY name [TRIGGER ...] [CHECKPOINT 'dir']
/// [OUTPUT MODE APPEND|UPDATE|COMPLETE] [STOP AFTER 'duration'] INTO
/// (CONSOLE | MEMORY | PARQUET|CSV|JSON 'dir') AS query`; `None` when `sql`
/// is not such a statement.
pub fn parse_start(sql: &str) -> Result<Option<StreamingQuery>, SessionError> {
    let bad = |why: String| SessionError::Unsupported(format!("START STREAMING QUERY: {why}"));
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| bad(e.to_string()))?;
    // Words and strings with their byte offsets, comments and spaces out.
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let offset = |line: u64, column: u64| -> usize {
        let start = line_starts
            .get(usize::try_from(line).unwrap_or(1).saturating_sub(1))
            .copied()
            .unwrap_or(sql.len());
        let chars = usize::try_from(column).unwrap_or(1).saturating_sub(1);
        sql[start..]
            .char_indices()
            .nth(chars)
            .map_or(sql.len(), |(i, _)| start + i)
    };
    let items: Vec<(Token, usize)> = tokens
        .into_iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .map(|t| {
            let at = offset(t.span.start.line, t.span.start.column);
            (t.token, at)
        })
        .collect();
    let mut it = items.iter().peekable();
    let word = |it: &mut std::iter::Peekable<std::slice::Iter<'_, (Token, usize)>>| match it.next()
    {
        Some((Token::Word(w), _)) => Some(w.value.to_ascii_uppercase()),
        _ => None,
    };
    let start = word(&mut it);
    let streaming = word(&mut it);
    let query = word(&mut it);
    if (start.as_deref(), streaming.as_deref(), query.as_deref())
        != (Some("START"), Some("STREAMING"), Some("QUERY"))
    {
        return Ok(None);
    }
    let name = match it.next() {
        Some((Token::Word(w), _)) if w.keyword == Keyword::NoKeyword || w.quote_style.is_some() => {
            w.value.clone()
        }
        Some((Token::Word(w), _)) => w.value.clone(),
        other => return Err(bad(format!("a name comes after QUERY, not {other:?}"))),
    };
    let string = |it: &mut std::iter::Peekable<std::slice::Iter<'_, (Token, usize)>>,
                  what: &str|
     -> Result<String, SessionError> {
        match it.next() {
            Some((Token::SingleQuotedString(s), _)) => Ok(s.clone()),
            other => Err(bad(format!("{what} takes a quoted string, not {other:?}"))),
        }
    };
    let mut parsed = StreamingQuery {
        name,
        trigger: Trigger::AsFastAsPossible,
        checkpoint: None,
        output_mode: OutputMode::Append,
        sink: Sink::Console,
        stop_after: None,
        watermark: None,
        sql: String::new(),
    };
    let mut sink = None;
    loop {
        let Some((token, at)) = it.next() else {
            return Err(bad("AS and the query are missing".to_string()));
        };
        let Token::Word(w) = token else {
            return Err(bad(format!("unexpected {token}")));
        };
        match w.value.to_ascii_uppercase().as_str() {
            "TRIGGER" => {
                parsed.trigger = match word(&mut it).as_deref() {
                    Some("ONCE") => Trigger::Once,
                    Some("AVAILABLE") if word(&mut it).as_deref() == Some("NOW") => {
                        Trigger::AvailableNow
                    }
                    Some("PROCESSING") if word(&mut it).as_deref() == Some("TIME") => {
                        let text = string(&mut it, "PROCESSING TIME")?;
                        Trigger::ProcessingTime(parse_duration(&text).map_err(bad)?)
                    }
                    other => {
                        return Err(bad(format!(
                            "TRIGGER is ONCE, AVAILABLE NOW or PROCESSING TIME '1 second', not \
                             {other:?}"
                        )));
                    }
                }
            }
            "CHECKPOINT" => parsed.checkpoint = Some(PathBuf::from(string(&mut it, "CHECKPOINT")?)),
            "OUTPUT" => {
                if word(&mut it).as_deref() != Some("MODE") {
                    return Err(bad("OUTPUT MODE APPEND, UPDATE or COMPLETE".to_string()));
                }
                parsed.output_mode = match word(&mut it).as_deref() {
                    Some("APPEND") => OutputMode::Append,
                    Some("UPDATE") => OutputMode::Update,
                    Some("COMPLETE") => OutputMode::Complete,
                    other => {
                        return Err(bad(format!(
                            "OUTPUT MODE is APPEND, UPDATE or COMPLETE, not {other:?}"
                        )));
                    }
                }
            }
            "WATERMARK" => {
                let column = match it.next() {
                    Some((Token::Word(w), _)) => w.value.clone(),
                    other => return Err(bad(format!("WATERMARK names a column, not {other:?}"))),
                };
                if word(&mut it).as_deref() != Some("DELAY") {
                    return Err(bad("WATERMARK column DELAY '10 seconds'".to_string()));
                }
                let text = string(&mut it, "DELAY")?;
                parsed.watermark = Some((column, parse_duration(&text).map_err(bad)?));
            }
            "STOP" => {
                if word(&mut it).as_deref() != Some("AFTER") {
                    return Err(bad("STOP AFTER '30 seconds'".to_string()));
                }
                let text = string(&mut it, "STOP AFTER")?;
                parsed.stop_after = Some(parse_duration(&text).map_err(bad)?);
            }
            "INTO" => {
                sink = Some(match word(&mut it).as_deref() {
                    Some("CONSOLE") => Sink::Console,
                    Some("MEMORY") => Sink::Memory,
                    Some("KAFKA") => {
                        let brokers = string(&mut it, "KAFKA")?;
                        if word(&mut it).as_deref() != Some("TOPIC") {
                            return Err(bad("INTO KAFKA 'host:port' TOPIC 'name'".to_string()));
                        }
                        Sink::Kafka {
                            brokers,
                            topic: string(&mut it, "TOPIC")?,
                        }
                    }
                    Some(format @ ("PARQUET" | "CSV" | "JSON")) => Sink::Files {
                        format: format.to_string(),
                        dir: PathBuf::from(string(&mut it, format)?),
                    },
                    other => {
                        return Err(bad(format!(
                            "INTO CONSOLE, MEMORY, KAFKA 'host:port' TOPIC 'name', or PARQUET, \
                             CSV or JSON 'directory', not {other:?}"
                        )));
                    }
                })
            }
            "AS" => {
                parsed.sql = sql[*at + 2..]
                    .trim()
                    .trim_end_matches(';')
                    .trim()
                    .to_string();
                break;
            }
            other => return Err(bad(format!("unexpected {other}"))),
        }
    }
    parsed.sink = sink.ok_or_else(|| bad("INTO says where the rows go".to_string()))?;
    if parsed.sql.is_empty() {
        return Err(bad("the query after AS is missing".to_string()));
    }
    if parsed.checkpoint.is_none() && matches!(parsed.sink, Sink::Files { .. }) {
        return Err(bad(
            "a file sink needs CHECKPOINT 'directory': without one, a restarted query could \
             not know what it wrote"
                .to_string(),
        ));
    }
    Ok(Some(parsed))
}

/// `'1 second'`, `'500 ms'`, `'2s'`, `'1 minute'`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration such as '1 second'"))?;
    let seconds = match unit.trim() {
        "ms" | "millisecond" | "milliseconds" => number / 1000.0,
        "" | "s" | "sec" | "second" | "seconds" => number,
        "m" | "min" | "minute" | "minutes" => number * 60.0,
        "h" | "hour" | "hours" => number * 3600.0,
        other => return Err(format!("unknown unit '{other}' in '{text}'")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

/// The checkpoint directory of one query.
struct Checkpoint {
    dir: PathBuf,
}

impl Checkpoint {
    fn open(dir: &Path, metadata: &Metadata) -> Result<Self, SessionError> {
        let failed = |e: std::io::Error| {
            SessionError::Unsupported(format!("checkpoint {}: {e}", dir.display()))
        };
        std::fs::create_dir_all(dir.join("offsets")).map_err(failed)?;
        std::fs::create_dir_all(dir.join("commits")).map_err(failed)?;
        std::fs::create_dir_all(dir.join("state")).map_err(failed)?;
        let file = dir.join("metadata");
        match std::fs::read(&file) {
            Ok(bytes) => {
                let found: Metadata = serde_json::from_slice(&bytes).map_err(|e| {
                    SessionError::Unsupported(format!(
                        "checkpoint {}: metadata is damaged: {e}",
                        dir.display()
                    ))
                })?;
                if &found != metadata {
                    return Err(SessionError::Unsupported(format!(
                        "checkpoint {} belongs to another query ({} from {} into {}); this one is \
                         {} from {} into {}: use another CHECKPOINT directory, or remove this one \
                         to start over",
                        dir.display(),
                        found.name,
                        found.sources.join(", "),
                        found.sink,
                        metadata.name,
                        metadata.sources.join(", "),
                        metadata.sink
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomically(
                    &file,
                    &serde_json::to_vec_pretty(metadata).unwrap_or_default(),
                )
                .map_err(failed)?;
            }
            Err(e) => return Err(failed(e)),
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn log(&self, kind: &str) -> Result<BTreeMap<u64, PathBuf>, SessionError> {
        let dir = self.dir.join(kind);
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| SessionError::Unsupported(format!("checkpoint {}: {e}", dir.display())))?;
        Ok(entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                name.parse::<u64>().ok().map(|n| (n, e.path()))
            })
            .collect())
    }

    fn offsets(&self) -> Result<Vec<BatchOffsets>, SessionError> {
        self.log("offsets")?
            .into_values()
            .map(|path| {
                let bytes = std::fs::read(&path).map_err(|e| {
                    SessionError::Unsupported(format!("checkpoint {}: {e}", path.display()))
                })?;
                serde_json::from_slice(&bytes).map_err(|e| {
                    SessionError::Unsupported(format!(
                        "checkpoint {}: the offset log entry is damaged: {e}",
                        path.display()
                    ))
                })
            })
            .collect()
    }

    /// The last committed batch, and what its commit says.
    fn committed(&self) -> Result<Option<(u64, BatchCommit)>, SessionError> {
        let Some((batch, path)) = self.log("commits")?.into_iter().next_back() else {
            return Ok(None);
        };
        let bytes = std::fs::read(&path).map_err(|e| {
            SessionError::Unsupported(format!("checkpoint {}: {e}", path.display()))
        })?;
        let commit = serde_json::from_slice(&bytes).unwrap_or_default();
        Ok(Some((batch, commit)))
    }

    /// Adds `progress` to the checkpoint's progress file, keeping the last
    /// [`PROGRESS_KEPT`]. Progress is for people: failing to keep it does
    /// not stop the query.
    fn record(&self, progress: &BatchProgress) {
        let path = self.dir.join("progress");
        let mut lines: Vec<String> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        lines.push(serde_json::to_string(progress).unwrap_or_default());
        let from = lines.len().saturating_sub(PROGRESS_KEPT);
        let text = lines[from..].join("\n") + "\n";
        if let Err(e) = write_atomically(&path, text.as_bytes()) {
            tracing::warn!(path = %path.display(), error = %e, "cannot keep streaming progress");
        }
    }

    fn write_offsets(&self, offsets: &BatchOffsets) -> Result<(), SessionError> {
        let path = self.dir.join("offsets").join(offsets.batch.to_string());
        write_atomically(
            &path,
            &serde_json::to_vec_pretty(offsets).unwrap_or_default(),
        )
        .map_err(|e| SessionError::Unsupported(format!("checkpoint {}: {e}", path.display())))
    }

    fn commit(&self, batch: u64, commit: &BatchCommit) -> Result<(), SessionError> {
        let path = self.dir.join("commits").join(batch.to_string());
        write_atomically(&path, &serde_json::to_vec(commit).unwrap_or_default())
            .map_err(|e| SessionError::Unsupported(format!("checkpoint {}: {e}", path.display())))
    }
}

/// Files of `dir` a file source may take: whole files (not hidden, not
/// being written: `_` and `.` names are skipped, as Spark does), oldest
/// first.
fn arrived_files(dir: &Path) -> Result<Vec<String>, SessionError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| SessionError::Unsupported(format!("source {}: {e}", dir.display())))?;
    let mut files: Vec<(SystemTime, String)> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            !name.starts_with('.') && !name.starts_with('_')
        })
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file().then(|| {
                (
                    meta.modified().unwrap_or(UNIX_EPOCH),
                    e.path().display().to_string(),
                )
            })
        })
        .collect();
    files.sort();
    Ok(files.into_iter().map(|(_, f)| f).collect())
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

impl Session {
    /// [`Session::run_streaming_query`] with `each` taking every batch of
    /// a query whose sink is [`Sink::ForeachBatch`].
    pub async fn run_streaming_query_with(
        &mut self,
        query: &StreamingQuery,
        each: ForeachBatch,
    ) -> Result<Vec<BatchProgress>, SessionError> {
        self.foreach_batch = Some(each);
        let ran = self.run_streaming_query(query).await;
        self.foreach_batch = None;
        ran
    }

    /// Runs a streaming query in the foreground until its trigger says to
    /// stop (ONCE, AVAILABLE NOW) or `STOP AFTER` passes; returns each
    /// batch's progress.
    pub async fn run_streaming_query(
        &mut self,
        query: &StreamingQuery,
    ) -> Result<Vec<BatchProgress>, SessionError> {
        self.stop_streams.store(false, Ordering::Relaxed);
        let prepared = self.prepare_streaming_query(query).await?;
        self.run_prepared(query, prepared).await
    }

    /// Everything a query checks and reads before its first batch: its
    /// plan, Spark's rules for it, its checkpoint and state. Errors here
    /// are the user's to fix, and come before the query starts.
    pub(crate) async fn prepare_streaming_query(
        &mut self,
        query: &StreamingQuery,
    ) -> Result<Prepared, SessionError> {
        let sources = self.streaming_sources(&query.sql)?;
        if sources.is_empty() {
            return Err(SessionError::Unsupported(format!(
                "streaming query {}: it reads no stream; declare one with CREATE UNBOUNDED \
                 EXTERNAL TABLE",
                query.name
            )));
        }
        let plan = self.plan_unbound(query, &sources).await?;
        let aggregation = state::aggregation(query, &plan)?;
        let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
        self.check_stateful(query, &sources, aggregation.as_ref())?;
        let metadata = Metadata {
            name: query.name.clone(),
            sink: query.sink.describe(),
            sources: sources.iter().map(StreamSource::name).collect(),
        };
        let checkpoint = match &query.checkpoint {
            Some(dir) => Some(Checkpoint::open(dir, &metadata)?),
            None => None,
        };
        let logged = match &checkpoint {
            Some(c) => c.offsets()?,
            None => Vec::new(),
        };
        let last_commit = match &checkpoint {
            Some(c) => c.committed()?,
            None => None,
        };
        let committed = last_commit.as_ref().map(|(b, _)| *b);
        // The state and watermark the last committed batch left.
        let watermark = last_commit
            .as_ref()
            .and_then(|(_, c)| c.next_watermark_micros);
        let state = match &aggregation {
            Some(agg) => Some(self.state_run(query, agg, checkpoint.as_ref())?),
            None => None,
        };
        self.connect_sockets(&sources, &logged).await?;
        let kafka_start = self.connect_kafka(query, &sources).await?;
        Ok(Prepared {
            sources,
            aggregation,
            schema,
            checkpoint,
            logged,
            committed,
            watermark,
            state,
            kafka_start,
        })
    }

    /// Runs the batches of a prepared query.
    pub(crate) async fn run_prepared(
        &mut self,
        query: &StreamingQuery,
        prepared: Prepared,
    ) -> Result<Vec<BatchProgress>, SessionError> {
        let Prepared {
            sources,
            aggregation,
            schema,
            checkpoint,
            mut logged,
            committed,
            mut watermark,
            state,
            kafka_start,
        } = prepared;
        let started = Instant::now();
        let origin = now_micros();
        let mut progress = Vec::new();
        let mut memory: Vec<RecordBatch> = Vec::new();
        let mut last_trigger: Option<Instant> = None;
        loop {
            if self.stopping() {
                // The script stops here too, as for any cancelled statement.
                return Err(SessionError::Unsupported(format!(
                    "streaming query {} was cancelled after {} batch{}; a restart on its \
                     checkpoint goes on from there",
                    query.name,
                    progress.len(),
                    if progress.len() == 1 { "" } else { "es" }
                )));
            }
            if query
                .stop_after
                .is_some_and(|limit| started.elapsed() >= limit)
            {
                break;
            }
            let last = logged.last().map(|o| o.batch);
            // A batch written ahead and never committed runs again first,
            // with exactly its offsets.
            let replay = logged
                .last()
                .filter(|o| committed.is_none_or(|c| o.batch > c))
                .filter(|o| !progress.iter().any(|p: &BatchProgress| p.batch == o.batch))
                .cloned();
            let (offsets, replayed) = match replay {
                Some(offsets) => (offsets, true),
                None => {
                    if let Trigger::ProcessingTime(interval) = query.trigger
                        && let Some(at) = last_trigger
                    {
                        self.nap(at + interval).await;
                    }
                    last_trigger = Some(Instant::now());
                    let kafka = self.kafka_offsets(&sources, &logged, &kafka_start).await?;
                    let mut next = next_offsets(
                        &sources,
                        &logged,
                        last.map_or(0, |b| b + 1),
                        origin,
                        &self.sockets,
                        &kafka,
                    );
                    next.watermark_micros = watermark;
                    if next.sources.values().all(SourceOffset::is_empty) {
                        match query.trigger {
                            Trigger::Once | Trigger::AvailableNow => break,
                            _ => {
                                self.nap(Instant::now() + Duration::from_millis(10)).await;
                                continue;
                            }
                        }
                    }
                    if let Some(c) = &checkpoint {
                        c.write_offsets(&next)?;
                    }
                    logged.push(next.clone());
                    (next, false)
                }
            };
            let begun = Instant::now();
            let (input_rows, output_rows, next_watermark, state_rows) = match (&aggregation, &state)
            {
                (Some(agg), Some(state)) => {
                    let ran = self
                        .run_stateful_batch(
                            query,
                            agg,
                            state,
                            &schema,
                            &sources,
                            &offsets,
                            &mut memory,
                        )
                        .await?;
                    (
                        ran.input_rows,
                        ran.output_rows,
                        ran.next_watermark,
                        ran.state_rows,
                    )
                }
                _ => {
                    let (i, o) = self
                        .run_batch(query, &schema, &sources, &offsets, &mut memory)
                        .await?;
                    (i, o, None, 0)
                }
            };
            watermark = match (offsets.watermark_micros, next_watermark) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            if self.stream_faults.stop_before_commit == Some(offsets.batch) {
                return Err(SessionError::Unsupported(format!(
                    "injected stop of streaming query {} before the commit of batch {} \
                     (ember.faults.streamStopBeforeCommit)",
                    query.name, offsets.batch
                )));
            }
            if let Some(c) = &checkpoint {
                let commit = BatchCommit {
                    next_watermark_micros: watermark,
                };
                c.commit(offsets.batch, &commit)?;
            }
            if let Some(state) = &state
                && let Err(e) = store::forget_before_snapshot(&state.dir, offsets.batch)
            {
                tracing::warn!(dir = %state.dir.display(), error = %e, "cannot remove old state versions");
            }
            let input_files = offsets
                .sources
                .values()
                .map(|o| match o {
                    SourceOffset::Files { files } => files.len(),
                    _ => 0,
                })
                .sum();
            let duration = begun.elapsed();
            let batch = BatchProgress {
                batch: offsets.batch,
                ended_micros: now_micros(),
                input_files,
                input_rows,
                output_rows,
                processed_rows_per_second: input_rows as f64 / duration.as_secs_f64().max(1e-6),
                duration,
                watermark_micros: offsets.watermark_micros,
                state_rows,
                replayed,
            };
            tracing::info!(
                query = %query.name,
                batch = batch.batch,
                input_files,
                input_rows,
                output_rows,
                duration_ms = batch.duration.as_millis() as u64,
                watermark = ?batch.watermark_micros,
                state_rows = batch.state_rows,
                replayed,
                "streaming batch committed"
            );
            if let Some(c) = &checkpoint {
                c.record(&batch);
            }
            self.report_batch(query, &batch);
            progress.push(batch);
            if query.trigger == Trigger::Once {
                break;
            }
        }
        Ok(progress)
    }

    fn hand_to_foreach(
        &mut self,
        query: &StreamingQuery,
        batch: u64,
        rows: &[RecordBatch],
    ) -> Result<(), SessionError> {
        let Some(each) = self.foreach_batch.as_mut() else {
            return Err(SessionError::Unsupported(format!(
                "streaming query {}: a foreach_batch sink needs its function \
                 (Session::run_streaming_query_with)",
                query.name
            )));
        };
        each(batch, rows).map_err(|why| {
            SessionError::Unsupported(format!(
                "streaming query {}: foreach_batch failed on batch {batch}: {why}",
                query.name
            ))
        })
    }

    /// Waits until `until`, or until the query is told to stop.
    async fn nap(&self, until: Instant) {
        while !self.stopping() {
            let now = Instant::now();
            if now >= until {
                return;
            }
            tokio::time::sleep((until - now).min(Duration::from_millis(20))).await;
        }
    }

    /// The streams `sql` reads.
    fn streaming_sources(&self, sql: &str) -> Result<Vec<StreamSource>, SessionError> {
        let dialect = GenericDialect {};
        let tokens = Tokenizer::new(&dialect, sql)
            .tokenize()
            .map_err(|e| SessionError::Unsupported(e.to_string()))?;
        let words: Vec<String> = tokens
            .iter()
            .filter_map(|t| match t {
                Token::Word(w) => Some(w.value.to_ascii_lowercase()),
                _ => None,
            })
            .collect();
        Ok(self
            .streams
            .iter()
            .filter(|(name, _)| words.iter().any(|w| w == *name))
            .map(|(_, s)| s.clone())
            .collect())
    }

    /// The query's logical plan, its sources bound to no rows.
    async fn plan_unbound(
        &mut self,
        query: &StreamingQuery,
        sources: &[StreamSource],
    ) -> Result<LogicalPlan, SessionError> {
        let empty = BatchOffsets {
            watermark_micros: None,
            batch: 0,
            sources: sources
                .iter()
                .map(|s| {
                    let offset = match s.kind {
                        SourceKind::Files { .. } => SourceOffset::Files { files: vec![] },
                        SourceKind::Rate { rows_per_second } => SourceOffset::Rate {
                            start: 0,
                            end: 0,
                            origin_micros: 0,
                            rows_per_second,
                        },
                        SourceKind::Socket { .. } => SourceOffset::Lines { start: 0, end: 0 },
                        SourceKind::Kafka { .. } => SourceOffset::Kafka {
                            ranges: BTreeMap::new(),
                        },
                    };
                    (s.name(), offset)
                })
                .collect(),
        };
        self.bind(sources, &empty).await?;
        let plan = self.context().state().create_logical_plan(&query.sql).await;
        self.unbind(sources);
        Ok(plan?)
    }

    /// Spark's rules for output modes and watermarks.
    fn check_stateful(
        &self,
        query: &StreamingQuery,
        sources: &[StreamSource],
        aggregation: Option<&state::Aggregation>,
    ) -> Result<(), SessionError> {
        let refuse = |why: String| {
            Err(SessionError::Unsupported(format!(
                "streaming query {}: {why}",
                query.name
            )))
        };
        if let Some((column, _)) = &query.watermark {
            let has = sources.iter().any(|s| {
                s.create
                    .schema
                    .fields()
                    .iter()
                    .any(|f| f.name().eq_ignore_ascii_case(column))
                    || matches!(
                        s.kind,
                        SourceKind::Rate { .. } | SourceKind::Kafka { json: false, .. }
                    ) && column.eq_ignore_ascii_case("timestamp")
            });
            if !has {
                return refuse(format!(
                    "WATERMARK {column}: no source of the query has that column"
                ));
            }
        }
        match (aggregation, query.output_mode) {
            (None, OutputMode::Complete) => refuse(
                "OUTPUT MODE COMPLETE writes every group every batch, so it needs an \
                 aggregation (GROUP BY)"
                    .to_string(),
            ),
            (Some(agg), OutputMode::Append)
                if agg.session.as_ref().is_some_and(|s| {
                    !query
                        .watermark
                        .as_ref()
                        .is_some_and(|(column, _)| column.eq_ignore_ascii_case(&s.column))
                }) =>
            {
                refuse(
                    "OUTPUT MODE APPEND of session windows writes each session once it is final, \
                     which needs a WATERMARK on the session_window's time column; add one, or use \
                     OUTPUT MODE UPDATE or COMPLETE"
                        .to_string(),
                )
            }
            (Some(agg), OutputMode::Append)
                if agg.window.is_none() && agg.session.is_none() && !agg.merges.is_empty() =>
            {
                refuse(
                "OUTPUT MODE APPEND of an aggregation writes each group once it is final, which \
                 needs a WATERMARK and a window over it among the GROUP BY keys (date_bin(INTERVAL \
                 '1 minute', column), an unnested sliding_window(column, size, slide), or \
                 session_window(column, gap)); use OUTPUT MODE UPDATE or COMPLETE, or add both"
                    .to_string(),
                )
            }
            _ => Ok(()),
        }
    }

    /// Runs an aggregating batch: late rows dropped, the batch's groups
    /// merged into the state on the executors (partition by partition), and
    /// what the output mode writes written.
    #[allow(clippy::too_many_arguments)]
    async fn run_stateful_batch(
        &mut self,
        query: &StreamingQuery,
        agg: &state::Aggregation,
        state: &StateRun,
        schema: &SchemaRef,
        sources: &[StreamSource],
        offsets: &BatchOffsets,
        memory: &mut Vec<RecordBatch>,
    ) -> Result<StatefulBatch, SessionError> {
        let spec = MergeSpec {
            aggregation: agg.clone(),
            mode: query.output_mode,
            watermark: offsets.watermark_micros,
            dir: state.dir.clone(),
            batch: offsets.batch,
            previous: offsets.batch.checked_sub(1),
            run: state.run,
        };
        self.bind(sources, offsets).await?;
        let ran = self
            .aggregate_bound(query, sources, offsets, spec, state.partitions)
            .await;
        let input_rows = self.input_rows(sources, offsets).await;
        self.unbind(sources);
        let (output, max_event) = ran?;
        let output_rows = output.iter().map(|b| b.num_rows() as u64).sum();
        self.write_rows(query, offsets.batch, schema, &output, memory)
            .await?;
        let next_watermark = match (&query.watermark, max_event) {
            (Some((_, delay)), Some(max)) => {
                Some(max - i64::try_from(delay.as_micros()).unwrap_or(i64::MAX))
            }
            _ => None,
        };
        let state_rows =
            store::rows(&state.dir, offsets.batch, state.partitions).map_err(SessionError::Plan)?;
        Ok(StatefulBatch {
            input_rows,
            output_rows,
            next_watermark,
            state_rows,
        })
    }

    /// Where a stateful query keeps its state, in how many partitions:
    /// under its checkpoint (the count fixed by its first run), or in a
    /// scratch directory of this run.
    fn state_run(
        &self,
        query: &StreamingQuery,
        agg: &state::Aggregation,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<StateRun, SessionError> {
        let wanted = if agg.partition_keys().next().is_some() {
            self.context().state().config().target_partitions().max(1)
        } else {
            1
        };
        // Unique among this driver's runs, which are all its executors see.
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let run = (now_micros() as u64) << 16 | (RUNS.fetch_add(1, Ordering::Relaxed) & 0xffff);
        let Some(checkpoint) = checkpoint else {
            let scratch = tempfile::Builder::new()
                .prefix("ember-stream-state-")
                .tempdir()
                .map_err(|e| {
                    SessionError::Unsupported(format!(
                        "streaming query {}: cannot make a directory for its state: {e}",
                        query.name
                    ))
                })?;
            return Ok(StateRun {
                dir: scratch.path().to_path_buf(),
                partitions: wanted,
                run,
                _scratch: Some(scratch),
            });
        };
        let dir = checkpoint.dir.join("state");
        let failed = |e: std::io::Error| {
            SessionError::Unsupported(format!("checkpoint {}: {e}", dir.display()))
        };
        let count = dir.join("partitions");
        let partitions = match std::fs::read_to_string(&count) {
            Ok(text) => text
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    SessionError::Unsupported(format!(
                        "checkpoint {}: {} is damaged ('{}' is not a partition count)",
                        checkpoint.dir.display(),
                        count.display(),
                        text.trim()
                    ))
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let earlier_format = std::fs::read_dir(&dir)
                    .map_err(failed)?
                    .filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().ends_with(".arrow"));
                if earlier_format {
                    return Err(SessionError::Unsupported(format!(
                        "checkpoint {} keeps its state as an earlier Ember did (one file per \
                         batch, not per partition): start the query on a new CHECKPOINT \
                         directory",
                        checkpoint.dir.display()
                    )));
                }
                write_atomically(&count, wanted.to_string().as_bytes()).map_err(failed)?;
                wanted
            }
            Err(e) => return Err(failed(e)),
        };
        Ok(StateRun {
            dir,
            partitions,
            run,
            _scratch: None,
        })
    }

    /// With the sources bound: drops rows older than the watermark, runs
    /// the query with its state merged on top, and finds the largest event time of the batch.
    async fn aggregate_bound(
        &mut self,
        query: &StreamingQuery,
        sources: &[StreamSource],
        offsets: &BatchOffsets,
        spec: MergeSpec,
        partitions: usize,
    ) -> Result<(Vec<RecordBatch>, Option<i64>), SessionError> {
        let mut max_event = None;
        if let Some((column, _)) = &query.watermark {
            for source in sources {
                let name = source.name();
                let Ok(table) = self.context().table(name.as_str()).await else {
                    continue;
                };
                if table.schema().field_with_unqualified_name(column).is_err() {
                    continue;
                }
                let micros = state::micros(column);
                let view = match offsets.watermark_micros {
                    Some(w) => {
                        let sql = format!(
                            "SELECT * FROM {} WHERE {micros} >= {w}",
                            state::quoted(&name)
                        );
                        Some(self.context().sql(&sql).await?.into_view())
                    }
                    None => None,
                };
                let max_sql = format!("SELECT max({micros}) FROM {}", state::quoted(&name));
                let max = self.context().sql(&max_sql).await?.collect().await?;
                max_event = max_event.max(state::max_micros(&max));
                if let Some(view) = view {
                    let _ = self.context().deregister_table(name.as_str());
                    self.context().register_table(name.as_str(), view)?;
                }
            }
        }
        let rows = self
            .rows_of_wrapped(&query.sql, |plan| merge_state(plan, spec, partitions))
            .await?;
        Ok((rows, max_event))
    }

    /// Hands rows a batch computed in the driver to the sink.
    async fn write_rows(
        &mut self,
        query: &StreamingQuery,
        batch: u64,
        schema: &SchemaRef,
        rows: &[RecordBatch],
        memory: &mut Vec<RecordBatch>,
    ) -> Result<(), SessionError> {
        match &query.sink {
            Sink::Files { format, dir } => write_batch_dir(format, dir, batch, schema, rows),
            Sink::ForeachBatch => self.hand_to_foreach(query, batch, rows),
            Sink::Kafka { .. } => {
                let topic = self.kafka.get(&sink_key(query)).cloned().ok_or_else(|| {
                    SessionError::Unsupported(format!(
                        "streaming query {}: not connected to its Kafka sink",
                        query.name
                    ))
                })?;
                topic.produce(batch, rows).await.map_err(|why| {
                    SessionError::Unsupported(format!("streaming query {}: {why}", query.name))
                })?;
                Ok(())
            }
            Sink::Console => {
                let text = datafusion::arrow::util::pretty::pretty_format_batches(rows)
                    .map_err(datafusion::error::DataFusionError::from)?;
                println!(
                    "-------------------------------------------\nBatch: {batch}\n\
                     -------------------------------------------\n{text}"
                );
                Ok(())
            }
            Sink::Memory => {
                if query.output_mode == OutputMode::Complete {
                    memory.clear();
                }
                memory.extend(rows.iter().cloned());
                let schema = memory
                    .first()
                    .map_or_else(|| Arc::clone(schema), RecordBatch::schema);
                let table = MemTable::try_new(schema, vec![memory.clone()])?;
                // A background query's table is the session's in front.
                let ctx = self.parent.as_ref().map_or(self.context(), |p| &p.publish);
                let _ = ctx.deregister_table(query.name.as_str());
                ctx.register_table(query.name.as_str(), Arc::new(table))?;
                Ok(())
            }
        }
    }

    /// Binds every source to its batch offsets, runs the query and hands
    /// its rows to the sink; returns the input and output rows.
    async fn run_batch(
        &mut self,
        query: &StreamingQuery,
        schema: &SchemaRef,
        sources: &[StreamSource],
        offsets: &BatchOffsets,
        memory: &mut Vec<RecordBatch>,
    ) -> Result<(u64, u64), SessionError> {
        self.bind(sources, offsets).await?;
        let ran = self.run_bound(query, schema, offsets.batch, memory).await;
        let input = self.input_rows(sources, offsets).await;
        self.unbind(sources);
        let output = ran?;
        Ok((input, output))
    }

    /// The rows a batch read, with its sources still bound.
    async fn input_rows(&self, sources: &[StreamSource], offsets: &BatchOffsets) -> u64 {
        let mut rows = 0;
        for (name, offset) in &offsets.sources {
            rows += match offset {
                SourceOffset::Rate { start, end, .. } | SourceOffset::Lines { start, end } => {
                    end.saturating_sub(*start)
                }
                SourceOffset::Kafka { ranges } => ranges
                    .values()
                    .map(|(start, end)| u64::try_from(end - start).unwrap_or(0))
                    .sum(),
                SourceOffset::Files { files } if files.is_empty() => 0,
                SourceOffset::Files { files } => {
                    let Some(source) = sources.iter().find(|s| s.name() == *name) else {
                        continue;
                    };
                    self.file_rows(source, files).await
                }
            };
        }
        rows
    }

    /// The rows in a batch's files of `source`; a file that cannot be read
    /// here counts nothing (the batch's job says what is wrong with it).
    async fn file_rows(&self, source: &StreamSource, files: &[String]) -> u64 {
        let header = self.context().state().config().options().catalog.has_header;
        if let Some(how) = counting::counting(&source.create, header) {
            let files = files.to_vec();
            let counted = tokio::task::spawn_blocking(move || {
                files
                    .iter()
                    .filter_map(|f| counting::count_file(how, f))
                    .sum::<u64>()
            })
            .await;
            return counted.unwrap_or(0);
        }
        let sql = format!("SELECT count(*) FROM {}", state::quoted(&source.name()));
        let counted = match self.context().sql(&sql).await {
            Ok(frame) => frame.collect().await.ok(),
            Err(_) => None,
        };
        counted
            .iter()
            .flatten()
            .filter_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::Int64Array>()
                    .map(|a| a.iter().flatten().sum::<i64>())
            })
            .map(|n| u64::try_from(n).unwrap_or(0))
            .sum()
    }

    async fn run_bound(
        &mut self,
        query: &StreamingQuery,
        schema: &SchemaRef,
        batch: u64,
        memory: &mut Vec<RecordBatch>,
    ) -> Result<u64, SessionError> {
        match &query.sink {
            Sink::Files { format, dir } => {
                let out = dir.join(format!("batch={batch}"));
                // What an earlier attempt of this batch wrote is replaced.
                if out.exists() {
                    std::fs::remove_dir_all(&out).map_err(|e| {
                        SessionError::Unsupported(format!(
                            "streaming query {}: cannot replace {}: {e}",
                            query.name,
                            out.display()
                        ))
                    })?;
                }
                let copy = format!(
                    "COPY ({}) TO '{}/' STORED AS {format}",
                    query.sql,
                    out.display()
                );
                match self.execute_stream(&copy, Mode::Run).await? {
                    StatementOutcome::Rows(rows) => {
                        let rows = rows.collect().await?;
                        Ok(count_of(&rows.batches))
                    }
                    _ => Ok(0),
                }
            }
            // The other sinks take the rows in the driver, as an
            // aggregation's are.
            Sink::Console | Sink::Memory | Sink::ForeachBatch | Sink::Kafka { .. } => {
                let rows = self.rows_of(&query.sql).await?;
                self.write_rows(query, batch, schema, &rows, memory).await?;
                Ok(rows.iter().map(|b| b.num_rows() as u64).sum())
            }
        }
    }

    async fn rows_of(&mut self, sql: &str) -> Result<Vec<RecordBatch>, SessionError> {
        match self.execute_in(sql, Mode::Run).await? {
            StatementOutcome::Rows(rows) => Ok(rows.batches),
            _ => Ok(Vec::new()),
        }
    }

    /// Registers each source as a table of exactly its batch's rows.
    async fn bind(
        &mut self,
        sources: &[StreamSource],
        offsets: &BatchOffsets,
    ) -> Result<(), SessionError> {
        for source in sources {
            let name = source.name();
            let Some(offset) = offsets.sources.get(&name) else {
                continue;
            };
            let _ = self.context().deregister_table(name.as_str());
            match offset {
                SourceOffset::Files { files } if files.is_empty() => {
                    let schema = Arc::new(source.create.schema.as_arrow().clone());
                    let table = MemTable::try_new(schema, vec![vec![]])?;
                    self.context()
                        .register_table(name.as_str(), Arc::new(table))?;
                }
                SourceOffset::Files { files } => {
                    let mut create = source.create.clone();
                    create.unbounded = false;
                    create.or_replace = true;
                    create.locations = files.clone();
                    self.context()
                        .execute_logical_plan(LogicalPlan::Ddl(DdlStatement::CreateExternalTable(
                            Box::new(create),
                        )))
                        .await?
                        .collect()
                        .await?;
                }
                SourceOffset::Rate {
                    start,
                    end,
                    origin_micros,
                    rows_per_second,
                } => {
                    // Row v was due at origin + v / rate.
                    let sql = format!(
                        "SELECT value, to_timestamp_micros({origin_micros} + value * 1000000 / \
                         {rows_per_second}) AS timestamp FROM generate_series({start}, {}) \
                         WHERE value < {end}",
                        end.max(&1) - 1
                    );
                    let view = self.context().sql(&sql).await?.into_view();
                    self.context().register_table(name.as_str(), view)?;
                }
                SourceOffset::Kafka { ranges } => {
                    let SourceKind::Kafka { json, .. } = &source.kind else {
                        continue;
                    };
                    let failed =
                        |why: String| SessionError::Unsupported(format!("stream {name}: {why}"));
                    let records = match self.kafka.get(&name).cloned() {
                        Some(topic) if !ranges.is_empty() => {
                            topic.read(ranges).await.map_err(failed)?
                        }
                        _ => RecordBatch::new_empty(kafka::record_schema()),
                    };
                    // A partition per core, so the batch's job runs in
                    // parallel.
                    let (schema, parts): (SchemaRef, Vec<Vec<RecordBatch>>) = if *json {
                        let schema = Arc::new(source.create.schema.as_arrow().clone());
                        let decoded = kafka::decode_json(&records, &schema).map_err(failed)?;
                        (schema, decoded.into_iter().map(|b| vec![b]).collect())
                    } else {
                        let parts = kafka::parts(records.num_rows())
                            .into_iter()
                            .map(|r| vec![records.slice(r.start, r.len())])
                            .collect();
                        (records.schema(), parts)
                    };
                    let table = MemTable::try_new(schema, parts)?;
                    self.context()
                        .register_table(name.as_str(), Arc::new(table))?;
                }
                SourceOffset::Lines { start, end } => {
                    let lines = self.socket_lines(&name, *start, *end);
                    let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
                        datafusion::arrow::datatypes::Field::new(
                            "value",
                            datafusion::arrow::datatypes::DataType::Utf8,
                            false,
                        ),
                    ]));
                    let column = datafusion::arrow::array::StringArray::from(lines);
                    let rows = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(column)])
                        .map_err(datafusion::error::DataFusionError::from)?;
                    let table = MemTable::try_new(schema, vec![vec![rows]])?;
                    self.context()
                        .register_table(name.as_str(), Arc::new(table))?;
                }
            }
        }
        Ok(())
    }

    /// Lines `start..end` of a socket source, the ones before `start`
    /// let go; lines lost with an earlier driver are missing (a warning
    /// says so).
    fn socket_lines(&self, name: &str, start: u64, end: u64) -> Vec<String> {
        let Some(buffer) = self.sockets.get(name) else {
            return Vec::new();
        };
        let mut buffer = buffer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if start < buffer.first {
            tracing::warn!(
                source = name,
                start,
                first = buffer.first,
                "a socket source cannot replay lines an earlier driver read; they are lost"
            );
        }
        let drop = usize::try_from(start.saturating_sub(buffer.first)).unwrap_or(usize::MAX);
        let drop = drop.min(buffer.lines.len());
        buffer.lines.drain(..drop);
        buffer.first += drop as u64;
        let from = usize::try_from(start.saturating_sub(buffer.first)).unwrap_or(0);
        let to = usize::try_from(end.saturating_sub(buffer.first))
            .unwrap_or(0)
            .min(buffer.lines.len());
        buffer
            .lines
            .get(from..to)
            .map(<[String]>::to_vec)
            .unwrap_or_default()
    }

    /// Connects every socket source of the query not yet connected; lines
    /// are numbered on from what the checkpoint says was read.
    async fn connect_sockets(
        &mut self,
        sources: &[StreamSource],
        logged: &[BatchOffsets],
    ) -> Result<(), SessionError> {
        for source in sources {
            let SourceKind::Socket { address } = &source.kind else {
                continue;
            };
            let name = source.name();
            if self.sockets.contains_key(&name) {
                continue;
            }
            let read = logged
                .iter()
                .filter_map(|o| match o.sources.get(&name) {
                    Some(SourceOffset::Lines { end, .. }) => Some(*end),
                    _ => None,
                })
                .max()
                .unwrap_or(0);
            let buffer = open_socket(address, read).await?;
            self.sockets.insert(name, buffer);
        }
        Ok(())
    }

    /// Connects to the Kafka topics the query reads and writes, and reads
    /// where each source begins if its checkpoint does not say.
    async fn connect_kafka(
        &mut self,
        query: &StreamingQuery,
        sources: &[StreamSource],
    ) -> Result<BTreeMap<String, BTreeMap<i32, i64>>, SessionError> {
        let mut starts = BTreeMap::new();
        for source in sources {
            let SourceKind::Kafka {
                brokers,
                topic,
                from_latest,
                ..
            } = &source.kind
            else {
                continue;
            };
            let name = source.name();
            let failed = |why: String| SessionError::Unsupported(format!("stream {name}: {why}"));
            let link = match self.kafka.get(&name) {
                Some(link) => Arc::clone(link),
                None => {
                    let link = Arc::new(
                        kafka::KafkaTopic::connect(brokers, topic)
                            .await
                            .map_err(failed)?,
                    );
                    self.kafka.insert(name.clone(), Arc::clone(&link));
                    link
                }
            };
            let start = link.offsets(*from_latest).await.map_err(failed)?;
            starts.insert(name, start);
        }
        if let Sink::Kafka { brokers, topic } = &query.sink
            && let std::collections::btree_map::Entry::Vacant(slot) =
                self.kafka.entry(sink_key(query))
        {
            let link = kafka::KafkaTopic::connect(brokers, topic)
                .await
                .map_err(|why| {
                    SessionError::Unsupported(format!(
                        "streaming query {}: its sink: {why}",
                        query.name
                    ))
                })?;
            slot.insert(Arc::new(link));
        }
        Ok(starts)
    }

    /// Each Kafka source's next ranges: from where the last batch ended
    /// (or where the query began) to the partitions' ends now, at most
    /// `maxOffsetsPerTrigger` records in all.
    async fn kafka_offsets(
        &self,
        sources: &[StreamSource],
        logged: &[BatchOffsets],
        starts: &BTreeMap<String, BTreeMap<i32, i64>>,
    ) -> Result<BTreeMap<String, SourceOffset>, SessionError> {
        let mut next = BTreeMap::new();
        for source in sources {
            let SourceKind::Kafka {
                max_offsets_per_trigger,
                ..
            } = &source.kind
            else {
                continue;
            };
            let name = source.name();
            let Some(link) = self.kafka.get(&name) else {
                continue;
            };
            let ends = link
                .offsets(true)
                .await
                .map_err(|why| SessionError::Unsupported(format!("stream {name}: {why}")))?;
            let taken: Option<BTreeMap<i32, i64>> =
                logged
                    .iter()
                    .rev()
                    .find_map(|o| match o.sources.get(&name) {
                        Some(SourceOffset::Kafka { ranges }) => {
                            Some(ranges.iter().map(|(p, (_, end))| (*p, *end)).collect())
                        }
                        _ => None,
                    });
            let from = taken.as_ref().or(starts.get(&name));
            let per_partition = max_offsets_per_trigger
                .map(|max| (max / ends.len().max(1) as u64).max(1))
                .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
            let ranges = ends
                .iter()
                .map(|(&partition, &end)| {
                    let start = from
                        .and_then(|f| f.get(&partition).copied())
                        .unwrap_or(0)
                        .min(end);
                    let end = per_partition.map_or(end, |n| end.min(start.saturating_add(n)));
                    (partition, (start, end))
                })
                .collect();
            next.insert(name, SourceOffset::Kafka { ranges });
        }
        Ok(next)
    }

    fn unbind(&mut self, sources: &[StreamSource]) {
        for source in sources {
            let _ = self.context().deregister_table(source.name().as_str());
        }
    }
}

/// The key a query's Kafka sink connection is kept under.
fn sink_key(query: &StreamingQuery) -> String {
    format!("sink of {}", query.name)
}

fn count_of(batches: &[RecordBatch]) -> u64 {
    use datafusion::arrow::array::{Array, UInt64Array};
    batches
        .iter()
        .filter_map(|b| b.column(0).as_any().downcast_ref::<UInt64Array>().cloned())
        .map(|c| (0..c.len()).map(|i| c.value(i)).sum::<u64>())
        .sum()
}

/// What each source has that earlier batches did not take.
/// A rate source that has no batch yet counts its rows from `origin`.
fn next_offsets(
    sources: &[StreamSource],
    logged: &[BatchOffsets],
    batch: u64,
    origin: i64,
    sockets: &Sockets,
    kafka: &BTreeMap<String, SourceOffset>,
) -> BatchOffsets {
    let mut next = BTreeMap::new();
    for source in sources {
        let name = source.name();
        let earlier = logged.iter().filter_map(|o| o.sources.get(&name));
        let offset = match &source.kind {
            SourceKind::Files {
                dir,
                max_files_per_trigger,
            } => {
                let taken: std::collections::BTreeSet<&String> = earlier
                    .flat_map(|o| match o {
                        SourceOffset::Files { files } => files.iter().collect::<Vec<_>>(),
                        _ => Vec::new(),
                    })
                    .collect();
                let files: Vec<String> = arrived_files(dir)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|f| !taken.contains(f))
                    .take(max_files_per_trigger.unwrap_or(usize::MAX))
                    .collect();
                SourceOffset::Files { files }
            }
            SourceKind::Rate { rows_per_second } => {
                let previous = earlier
                    .filter_map(|o| match o {
                        SourceOffset::Rate {
                            end, origin_micros, ..
                        } => Some((*end, *origin_micros)),
                        _ => None,
                    })
                    .next_back();
                let (start, origin) = previous.unwrap_or((0, origin));
                let elapsed = u64::try_from(now_micros().saturating_sub(origin)).unwrap_or(0);
                let due = elapsed.saturating_mul(*rows_per_second) / 1_000_000;
                SourceOffset::Rate {
                    start,
                    end: due.max(start),
                    origin_micros: origin,
                    rows_per_second: *rows_per_second,
                }
            }
            SourceKind::Socket { .. } => {
                let start = earlier
                    .filter_map(|o| match o {
                        SourceOffset::Lines { end, .. } => Some(*end),
                        _ => None,
                    })
                    .max();
                let (first, read) = sockets.get(&name).map_or((0, 0), |b| {
                    let b = b.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    (b.first, b.lines.len() as u64)
                });
                let start = start.unwrap_or(first);
                SourceOffset::Lines {
                    start,
                    end: (first + read).max(start),
                }
            }
            SourceKind::Kafka { .. } => kafka.get(&name).cloned().unwrap_or(SourceOffset::Kafka {
                ranges: BTreeMap::new(),
            }),
        };
        next.insert(name, offset);
    }
    BatchOffsets {
        batch,
        sources: next,
        watermark_micros: None,
    }
}

/// Faults for tests of streaming recovery (`ember.faults.*`).
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamFaults {
    /// The query stops with an error after this batch's sink committed and
    /// before its commit log entry is written.
    pub stop_before_commit: Option<u64>,
}

/// A query checked and ready for its first batch.
pub(crate) struct Prepared {
    sources: Vec<StreamSource>,
    aggregation: Option<state::Aggregation>,
    schema: SchemaRef,
    checkpoint: Option<Checkpoint>,
    /// The offset log, and the last batch committed.
    logged: Vec<BatchOffsets>,
    committed: Option<u64>,
    watermark: Option<i64>,
    /// Where the state is kept, for a stateful query.
    state: Option<StateRun>,
    /// Where each Kafka source begins when the checkpoint has no offsets
    /// of it (`startingOffsets`, read when the query started).
    kafka_start: BTreeMap<String, BTreeMap<i32, i64>>,
}

/// What an aggregating batch did.
struct StatefulBatch {
    input_rows: u64,
    output_rows: u64,
    next_watermark: Option<i64>,
    /// Rows the state holds after the batch.
    state_rows: u64,
}

/// Where a stateful query's state lives in this run.
pub(crate) struct StateRun {
    dir: PathBuf,
    /// Partitions of the state: hashed by its keys (without a session
    /// window's), fixed for the life of a checkpoint.
    partitions: usize,
    /// This run of the query (see `store::Partition::run`).
    run: u64,
    /// The directory, when the query has no checkpoint: removed with the run.
    _scratch: Option<tempfile::TempDir>,
}

/// `plan` (a batch's groups) hash-partitioned by the state's keys into
/// `partitions`, under the node that merges each partition into its state.
fn merge_state(
    plan: Arc<dyn ExecutionPlan>,
    spec: MergeSpec,
    partitions: usize,
) -> Result<Arc<dyn ExecutionPlan>, SessionError> {
    let agg = &spec.aggregation;
    let schema = plan.schema();
    let keys = agg
        .partition_keys()
        .map(|k| Ok(Arc::new(Column::new_with_schema(k, &schema)?) as Arc<dyn PhysicalExpr>))
        .collect::<Result<Vec<_>, DataFusionError>>()?;
    let input: Arc<dyn ExecutionPlan> = if partitions > 1 && !keys.is_empty() {
        Arc::new(RepartitionExec::try_new(
            plan,
            Partitioning::Hash(keys, partitions),
        )?)
    } else if plan.output_partitioning().partition_count() > 1 {
        Arc::new(CoalescePartitionsExec::new(plan))
    } else {
        plan
    };
    Ok(Arc::new(StateMergeExec::new(input, spec)))
}

/// Writes `rows` as `dir/batch=N/part-0.EXT`, replacing what an earlier
/// attempt of the batch wrote: the directory appears whole (written aside,
/// then renamed).
fn write_batch_dir(
    format: &str,
    dir: &Path,
    batch: u64,
    schema: &SchemaRef,
    rows: &[RecordBatch],
) -> Result<(), SessionError> {
    let failed = |e: String| {
        SessionError::Unsupported(format!("sink {}: batch {batch}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
    let tmp = dir.join(format!(".batch={batch}.tmp"));
    let done = dir.join(format!("batch={batch}"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| failed(e.to_string()))?;
    let ext = format.to_ascii_lowercase();
    let file = std::fs::File::create(tmp.join(format!("part-0.{ext}")))
        .map_err(|e| failed(e.to_string()))?;
    let schema = &rows
        .first()
        .map_or_else(|| Arc::clone(schema), RecordBatch::schema);
    match ext.as_str() {
        "parquet" => {
            let mut writer =
                datafusion::parquet::arrow::ArrowWriter::try_new(file, Arc::clone(schema), None)
                    .map_err(|e| failed(e.to_string()))?;
            for b in rows {
                writer.write(b).map_err(|e| failed(e.to_string()))?;
            }
            writer.close().map_err(|e| failed(e.to_string()))?;
        }
        "csv" => {
            let mut writer = datafusion::arrow::csv::Writer::new(file);
            for b in rows {
                writer.write(b).map_err(|e| failed(e.to_string()))?;
            }
        }
        _ => {
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(file);
            for b in rows {
                writer.write(b).map_err(|e| failed(e.to_string()))?;
            }
            writer.finish().map_err(|e| failed(e.to_string()))?;
        }
    }
    std::fs::write(tmp.join("_SUCCESS"), b"").map_err(|e| failed(e.to_string()))?;
    if done.exists() {
        std::fs::remove_dir_all(&done).map_err(|e| failed(e.to_string()))?;
    }
    std::fs::rename(&tmp, &done).map_err(|e| failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_statement_reads_as_written() {
        let q = parse_start(
            "START STREAMING QUERY clicks TRIGGER PROCESSING TIME '2 seconds' CHECKPOINT '/ck' \
             OUTPUT MODE APPEND INTO PARQUET '/out' AS SELECT a, b FROM events WHERE a > 1;",
        )
        .unwrap()
        .unwrap();
        assert_eq!(q.name, "clicks");
        assert_eq!(q.trigger, Trigger::ProcessingTime(Duration::from_secs(2)));
        assert_eq!(q.checkpoint, Some(PathBuf::from("/ck")));
        assert_eq!(
            q.sink,
            Sink::Files {
                format: "PARQUET".into(),
                dir: PathBuf::from("/out")
            }
        );
        assert_eq!(q.sql, "SELECT a, b FROM events WHERE a > 1");
        assert_eq!(parse_start("SELECT 1").unwrap(), None);
        let once =
            parse_start("start streaming query q trigger available now into console as\nselect 1")
                .unwrap()
                .unwrap();
        assert_eq!(once.trigger, Trigger::AvailableNow);
        assert_eq!(once.sql, "select 1");
        for bad in [
            "START STREAMING QUERY q INTO PARQUET '/o' AS SELECT 1",
            "START STREAMING QUERY q TRIGGER SOMETIMES INTO CONSOLE AS SELECT 1",
            "START STREAMING QUERY q INTO CONSOLE",
        ] {
            assert!(parse_start(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_read_with_their_units() {
        assert_eq!(parse_duration("1 second"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500 ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
    }
}
