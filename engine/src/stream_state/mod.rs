//! Streaming aggregation state: what a stateful streaming query keeps
//! between batches, and how a batch's groups merge into it.
//!
//! A streaming query that aggregates (`GROUP BY` with `count`, `sum`,
//! `min`, `max`), deduplicates (`SELECT DISTINCT`) or groups by session
//! windows keeps one row per group: the aggregates of every row seen so
//! far. Its state is split by the hash of its keys into a fixed number of
//! partitions; each batch's job merges partition *p* of the batch's groups
//! into version *b - 1* of partition *p* of the state, in a task on an
//! executor ([`StateMergeExec`]), and writes version *b* to the query's
//! checkpoint ([`store`]): a snapshot every few batches and the changes in
//! between. An executor keeps the versions it wrote in memory for the next
//! batch; another executor, or a restarted query, rebuilds them from the
//! checkpoint.
//!
//! With `WATERMARK column DELAY 'd'`, the watermark is the largest event
//! time seen in earlier batches minus `d`: a window (a `date_bin` of the
//! watermark column among the group keys) whose end is at or before it is
//! final. In `APPEND` mode a final window is written once and leaves the
//! state; `UPDATE` writes the groups a batch changed; `COMPLETE` writes
//! every group every batch.

mod exec;
pub mod store;

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};

pub use exec::{MergeSpec, StateMergeExec};

/// How rows reach the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputMode {
    Append,
    Update,
    Complete,
}

/// How a column of partial aggregates merges with the state's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Merge {
    Sum,
    Min,
    Max,
}

/// What a streaming aggregation keeps and merges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregation {
    /// Output columns that are group keys.
    pub keys: Vec<String>,
    /// Output columns that are aggregates, and how each merges.
    pub merges: Vec<(String, Merge)>,
    /// The key column holding a window's start over the watermark column,
    /// and the window's length in microseconds.
    pub window: Option<(String, i64)>,
    /// The key column that is the watermark column itself (deduplication
    /// forgets keys older than the watermark).
    pub event_key: Option<String>,
    /// The key column that is a `session_window`, if one is.
    pub session: Option<SessionKey>,
}

impl Aggregation {
    /// The keys the state is partitioned by: every group key but a session
    /// window's (sessions of one key merge, so they must meet in one
    /// partition). None: the state is one partition.
    pub fn partition_keys(&self) -> impl Iterator<Item = &String> {
        self.keys
            .iter()
            .filter(|k| self.session.as_ref().is_none_or(|s| s.key != **k))
    }

    /// SQL merging output column `column`'s values across rows of one
    /// group, if it is an aggregate.
    fn merged(&self, column: &str) -> Option<String> {
        let (_, merge) = self.merges.iter().find(|(n, _)| n == column)?;
        let function = match merge {
            Merge::Sum => "sum",
            Merge::Min => "min",
            Merge::Max => "max",
        };
        Some(format!("{function}({})", quoted(column)))
    }
}

/// A `session_window(column, gap)` among an aggregation's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionKey {
    /// The output column holding each session's start.
    pub key: String,
    /// The time column the sessions are made of.
    pub column: String,
    /// The gap that ends a session, in microseconds.
    pub gap: i64,
}

/// The column the state of a session-window aggregation keeps beside the
/// output's: each session's end, in microseconds.
const SESSION_END: &str = "__ember_session_end";
/// Whether a batch's rows are in a session: set while merging.
const SESSION_CHANGED: &str = "__ember_session_changed";

/// The schema of the state `agg` keeps for output `schema`: the output's
/// columns, and for session windows each session's end.
pub fn state_schema(agg: &Aggregation, schema: &SchemaRef) -> SchemaRef {
    if agg.session.is_none() {
        return Arc::clone(schema);
    }
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(datafusion::arrow::datatypes::Field::new(
        SESSION_END,
        datafusion::arrow::datatypes::DataType::Int64,
        false,
    )));
    Arc::new(datafusion::arrow::datatypes::Schema::new(fields))
}

pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// SQL for timestamp column `column` in microseconds since the epoch, the
/// unit watermarks and windows are reckoned in.
pub fn micros(column: &str) -> String {
    format!(
        "CAST(arrow_cast({}, 'Timestamp(Microsecond, None)') AS BIGINT)",
        quoted(column)
    )
}

/// A context for merging one state partition, in the task that holds it:
/// one partition, so a merge runs on the task's thread and does not fan
/// out over cores the executor's other tasks use.
pub(crate) fn merge_context() -> SessionContext {
    SessionContext::new_with_config(
        datafusion::prelude::SessionConfig::new().with_target_partitions(1),
    )
}

/// The state after a batch, and the rows the batch writes.
pub struct Merged {
    pub state: Vec<RecordBatch>,
    pub output: Vec<RecordBatch>,
}

/// Merges `batch` (this batch's aggregates) into `state`, and says what to
/// write and keep under `mode`, with windows ending by `watermark` final.
pub async fn merge(
    agg: &Aggregation,
    mode: OutputMode,
    schema: &SchemaRef,
    state: &[RecordBatch],
    batch: &[RecordBatch],
    watermark: Option<i64>,
) -> Result<Merged> {
    let ctx = merge_context();
    let table = |rows: &[RecordBatch]| mem_table(schema, rows);
    ctx.register_table("batch", table(batch)?)?;
    if let Some(session) = &agg.session {
        ctx.register_table("state", mem_table(&state_schema(agg, schema), state)?)?;
        return merge_sessions(&ctx, agg, session, mode, schema, watermark).await;
    }
    ctx.register_table("state", table(state)?)?;
    if agg.merges.is_empty() && mode == OutputMode::Append {
        return deduplicate(&ctx, agg, schema, watermark).await;
    }
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let select: Vec<String> = columns
        .iter()
        .map(|c| match agg.merged(c) {
            Some(value) => format!("{value} AS {}", quoted(c)),
            None => quoted(c),
        })
        .collect();
    let keys: Vec<String> = agg.keys.iter().map(|k| quoted(k)).collect();
    let grouped = format!(
        "SELECT {} FROM (SELECT * FROM state UNION ALL SELECT * FROM batch) AS u{}",
        select.join(", "),
        if keys.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {}", keys.join(", "))
        }
    );
    // Casting back keeps each column's type (a sum of Int64 counts stays
    // Int64), so the state's schema never drifts.
    let casts: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| {
            format!(
                "arrow_cast({q}, '{t}') AS {q}",
                q = quoted(f.name()),
                t = f.data_type()
            )
        })
        .collect();
    let merged_sql = format!("SELECT {} FROM ({grouped}) AS g", casts.join(", "));
    let merged = ctx.sql(&merged_sql).await?.collect().await?;
    ctx.register_table("merged", table(&merged)?)?;
    let final_window = match (&agg.window, watermark) {
        (Some((column, length)), Some(w)) => Some(format!("{} + {length} <= {w}", micros(column))),
        _ => None,
    };
    let rows = |sql: String| {
        let ctx = &ctx;
        async move { ctx.sql(&sql).await?.collect().await }
    };
    let all = "SELECT * FROM merged".to_string();
    let (output, state) = match mode {
        OutputMode::Complete => (merged.clone(), merged),
        OutputMode::Update => {
            let on: Vec<String> = agg
                .keys
                .iter()
                .map(|k| format!("(m.{q} IS NOT DISTINCT FROM b.{q})", q = quoted(k)))
                .collect();
            let changed = if on.is_empty() {
                all.clone()
            } else {
                format!(
                    "SELECT m.* FROM merged m LEFT SEMI JOIN batch b ON {}",
                    on.join(" AND ")
                )
            };
            let kept = match &final_window {
                Some(done) => rows(format!("{all} WHERE NOT ({done})")).await?,
                None => merged,
            };
            (rows(changed).await?, kept)
        }
        OutputMode::Append => {
            let Some(done) = &final_window else {
                return Ok(Merged {
                    state: merged,
                    output: Vec::new(),
                });
            };
            (
                rows(format!("{all} WHERE {done}")).await?,
                rows(format!("{all} WHERE NOT ({done})")).await?,
            )
        }
    };
    Ok(Merged { state, output })
}

/// Merges a batch of a session-window aggregation into the sessions kept.
///
/// The batch's job grouped its rows by their own event time (a
/// `session_window` call stands for it) and the other keys. Each of those
/// groups is a session of its own, from its time to `gap` later; with the
/// sessions kept, ordered by start within each key, a session that starts
/// before the furthest end of those before it belongs with them (Spark's
/// merge of overlapping sessions). The merged session starts at its first
/// start, ends at its last end, and its aggregates merge as any others.
/// A session is final once its end is at or before the watermark: no
/// row that is not late can join it.
async fn merge_sessions(
    ctx: &SessionContext,
    agg: &Aggregation,
    session: &SessionKey,
    mode: OutputMode,
    schema: &SchemaRef,
    watermark: Option<i64>,
) -> Result<Merged> {
    let columns: Vec<String> = schema.fields().iter().map(|f| quoted(f.name())).collect();
    let start = micros(&session.key);
    let gap = session.gap;
    let end = quoted(SESSION_END);
    let changed = quoted(SESSION_CHANGED);
    // Rows whose event time is NULL are in no session.
    let all = format!(
        "SELECT {cols}, {end}, 0 AS {changed} FROM state \
         UNION ALL SELECT {cols}, {start} + {gap} AS {end}, 1 AS {changed} FROM batch \
         WHERE {key} IS NOT NULL",
        cols = columns.join(", "),
        key = quoted(&session.key),
    );
    let others: Vec<String> = agg
        .keys
        .iter()
        .filter(|k| **k != session.key)
        .map(|k| quoted(k))
        .collect();
    let partition = if others.is_empty() {
        String::new()
    } else {
        format!("PARTITION BY {} ", others.join(", "))
    };
    let order = format!("ORDER BY {start}, {end}");
    let reach = format!(
        "SELECT *, max({end}) OVER ({partition}{order} ROWS BETWEEN UNBOUNDED PRECEDING AND \
         1 PRECEDING) AS __reach FROM ({all}) AS u"
    );
    let numbered = format!(
        "SELECT *, sum(CASE WHEN __reach IS NULL OR {start} >= __reach THEN 1 ELSE 0 END) \
         OVER ({partition}{order} ROWS UNBOUNDED PRECEDING) AS __session FROM ({reach}) AS r"
    );
    let select: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| {
            let q = quoted(f.name());
            let value = if *f.name() == session.key {
                format!("min({q})")
            } else {
                agg.merged(f.name()).unwrap_or_else(|| q.clone())
            };
            // Casting back keeps each column's type, so the state's
            // schema never drifts.
            format!("arrow_cast({value}, '{t}') AS {q}", t = f.data_type())
        })
        .collect();
    let mut group = others.clone();
    group.push("__session".to_string());
    let merged_sql = format!(
        "SELECT {}, max({end}) AS {end}, max({changed}) AS {changed} FROM ({numbered}) AS n \
         GROUP BY {}",
        select.join(", "),
        group.join(", ")
    );
    let merged = ctx.sql(&merged_sql).await?.collect().await?;
    // The schema of no sessions at all: the state's, and whether changed.
    let mut fields: Vec<_> = state_schema(agg, schema).fields().iter().cloned().collect();
    fields.push(Arc::new(datafusion::arrow::datatypes::Field::new(
        SESSION_CHANGED,
        datafusion::arrow::datatypes::DataType::Int64,
        true,
    )));
    let empty = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
    ctx.register_table("merged", mem_table(&empty, &merged)?)?;
    let rows = |sql: String| async move { ctx.sql(&sql).await?.collect().await };
    let out = format!("SELECT {} FROM merged", columns.join(", "));
    let kept = format!("SELECT {}, {end} FROM merged", columns.join(", "));
    let done = watermark.map(|w| format!("{end} <= {w}"));
    let open = |sql: &str| match &done {
        Some(done) => format!("{sql} WHERE NOT ({done})"),
        None => sql.to_string(),
    };
    let (output, state) = match mode {
        OutputMode::Complete => (rows(out).await?, rows(kept).await?),
        OutputMode::Update => (
            rows(format!("{out} WHERE {changed} = 1")).await?,
            rows(open(&kept)).await?,
        ),
        OutputMode::Append => match &done {
            Some(done) => (
                rows(format!("{out} WHERE {done}")).await?,
                rows(open(&kept)).await?,
            ),
            None => (Vec::new(), rows(kept).await?),
        },
    };
    Ok(Merged { state, output })
}

/// `SELECT DISTINCT` over a stream: a row is written the first time its
/// keys are seen, and the keys are kept (with a watermark on one of them,
/// only while it is not older than the watermark, as Spark's
/// `dropDuplicatesWithinWatermark` does).
async fn deduplicate(
    ctx: &SessionContext,
    agg: &Aggregation,
    schema: &SchemaRef,
    watermark: Option<i64>,
) -> Result<Merged> {
    let on: Vec<String> = agg
        .keys
        .iter()
        .map(|k| format!("(b.{q} IS NOT DISTINCT FROM s.{q})", q = quoted(k)))
        .collect();
    let fresh = ctx
        .sql(&format!(
            "SELECT DISTINCT b.* FROM batch b LEFT ANTI JOIN state s ON {}",
            on.join(" AND ")
        ))
        .await?
        .collect()
        .await?;
    ctx.register_table("fresh", mem_table(schema, &fresh)?)?;
    let mut kept = "SELECT * FROM state UNION ALL SELECT * FROM fresh".to_string();
    if let (Some(column), Some(w)) = (&agg.event_key, watermark) {
        kept = format!(
            "SELECT * FROM ({kept}) AS k WHERE {} >= {w}",
            micros(column)
        );
    }
    let state = ctx.sql(&kept).await?.collect().await?;
    Ok(Merged {
        state,
        output: fresh,
    })
}

/// `rows` as a table, of their own schema (a job's rows may say nullable
/// where the plan did not; the merge's casts bring them to one), or of
/// `schema` when there are none.
fn mem_table(schema: &SchemaRef, rows: &[RecordBatch]) -> Result<Arc<MemTable>> {
    let schema = rows
        .first()
        .map_or_else(|| Arc::clone(schema), RecordBatch::schema);
    Ok(Arc::new(MemTable::try_new(schema, vec![rows.to_vec()])?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    const S: i64 = 1_000_000;

    fn sessions() -> (Aggregation, SchemaRef) {
        let agg = Aggregation {
            keys: vec!["start".into(), "k".into()],
            merges: vec![("n".into(), Merge::Sum)],
            window: None,
            event_key: None,
            session: Some(SessionKey {
                key: "start".into(),
                column: "ts".into(),
                gap: 30 * S,
            }),
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "start",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                true,
            ),
            Field::new("k", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        (agg, schema)
    }

    fn rows(schema: &SchemaRef, rows: &[(i64, &str, i64)], ends: Option<&[i64]>) -> RecordBatch {
        let mut columns: Vec<Arc<dyn datafusion::arrow::array::Array>> = vec![
            Arc::new(TimestampMicrosecondArray::from(
                rows.iter().map(|r| r.0 * S).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
        ];
        let mut schema = Arc::clone(schema);
        if let Some(ends) = ends {
            columns.push(Arc::new(Int64Array::from(
                ends.iter().map(|e| e * S).collect::<Vec<_>>(),
            )));
            let (agg, _) = sessions();
            schema = state_schema(&agg, &schema);
        }
        RecordBatch::try_new(schema, columns).unwrap()
    }

    /// (start s, key, n, end s) of each session, sorted.
    fn read(batches: &[RecordBatch]) -> Vec<(i64, String, i64, Option<i64>)> {
        let mut out = Vec::new();
        for b in batches {
            let start = b
                .column(0)
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .unwrap();
            let k = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            let n = b.column(2).as_any().downcast_ref::<Int64Array>().unwrap();
            let end = (b.num_columns() > 3)
                .then(|| b.column(3).as_any().downcast_ref::<Int64Array>().unwrap());
            for i in 0..b.num_rows() {
                out.push((
                    start.value(i) / S,
                    k.value(i).to_string(),
                    n.value(i),
                    end.map(|e| e.value(i) / S),
                ));
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn an_event_between_two_sessions_joins_them_and_update_writes_the_joined_one() {
        let (agg, schema) = sessions();
        // Kept: a [0, 40) with 2 rows, a [60, 90) with 1, b [0, 30).
        let state = rows(
            &schema,
            &[(0, "a", 2), (60, "a", 1), (0, "b", 1)],
            Some(&[40, 90, 30]),
        );
        // 35 reaches from a's first session into its second.
        let batch = rows(&schema, &[(35, "a", 1)], None);
        let merged = merge(
            &agg,
            OutputMode::Update,
            &schema,
            std::slice::from_ref(&state),
            std::slice::from_ref(&batch),
            Some(10 * S),
        )
        .await
        .unwrap();
        assert_eq!(read(&merged.output), vec![(0, "a".into(), 4, None)]);
        assert_eq!(
            read(&merged.state),
            vec![(0, "a".into(), 4, Some(90)), (0, "b".into(), 1, Some(30))]
        );
        // Complete writes every session; a watermark at 30 ends b's.
        let merged = merge(
            &agg,
            OutputMode::Complete,
            &schema,
            std::slice::from_ref(&state),
            std::slice::from_ref(&batch),
            Some(30 * S),
        )
        .await
        .unwrap();
        assert_eq!(
            read(&merged.output),
            vec![(0, "a".into(), 4, None), (0, "b".into(), 1, None)]
        );
        let merged = merge(
            &agg,
            OutputMode::Append,
            &schema,
            &[state],
            &[batch],
            Some(30 * S),
        )
        .await
        .unwrap();
        assert_eq!(read(&merged.output), vec![(0, "b".into(), 1, None)]);
        assert_eq!(read(&merged.state), vec![(0, "a".into(), 4, Some(90))]);
    }
}
