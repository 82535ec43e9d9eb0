//! Streaming aggregations: state kept between batches.
//!
//! A streaming query that aggregates (`GROUP BY` with `count`, `sum`,
//! `min`, `max`) keeps, between batches, one row per group: the aggregates
//! of every row seen so far. Each batch's own aggregates (an Ember job over
//! the batch) are merged into that state in the driver (counts and sums
//! add, minimums and maximums keep the extreme), and the state is written
//! to the checkpoint with the batch, so a restarted query rebuilds it.
//!
//! With `WATERMARK column DELAY 'd'`, the watermark is the largest event
//! time seen in earlier batches minus `d`: rows older than it are dropped
//! as late, and a window (a `date_bin` of the watermark column among the
//! group keys) whose end is at or before it is final. In `APPEND` mode a
//! final window is written once and leaves the state; `UPDATE` writes the
//! groups a batch changed; `COMPLETE` writes every group every batch.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::prelude::SessionContext;

use super::{OutputMode, StreamingQuery};
use crate::session::SessionError;

/// How a column of partial aggregates merges with the state's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Merge {
    Sum,
    Min,
    Max,
}

/// What a streaming aggregation keeps and merges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Aggregation {
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionKey {
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
pub(crate) fn state_schema(agg: &Aggregation, schema: &SchemaRef) -> SchemaRef {
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

fn unsupported(query: &StreamingQuery, why: &str) -> SessionError {
    SessionError::Unsupported(format!("streaming query {}: {why}", query.name))
}

/// The aggregation `plan` (the query's logical plan) does, if any; an
/// error when it aggregates in a way a stream cannot keep.
pub(crate) fn aggregation(
    query: &StreamingQuery,
    plan: &LogicalPlan,
) -> Result<Option<Aggregation>, SessionError> {
    let mut found = None;
    let mut windows = false;
    let mut node = plan;
    // The output columns come from a projection over the aggregate (after
    // any sort or limit).
    let mut projection: Option<(&[Expr], &datafusion::common::DFSchemaRef)> = None;
    loop {
        match node {
            LogicalPlan::Projection(p) => {
                projection.get_or_insert((&p.expr, &p.schema));
                node = &p.input;
            }
            LogicalPlan::Sort(s) => node = &s.input,
            LogicalPlan::Limit(l) => node = &l.input,
            LogicalPlan::Distinct(datafusion::logical_expr::Distinct::All(input)) => {
                return distinct(query, plan, input);
            }
            LogicalPlan::Aggregate(a) => {
                found = Some(a);
                break;
            }
            other => {
                windows = aggregates_within(other)?;
                break;
            }
        }
    }
    let Some(aggregate) = found else {
        if windows {
            return Err(unsupported(
                query,
                "an aggregation or window function inside the query (not its last step) \
                 needs state Ember's streaming does not keep; aggregate last, with GROUP BY",
            ));
        }
        return Ok(None);
    };
    if aggregates_within(&aggregate.input)? {
        return Err(unsupported(
            query,
            "an aggregation over an aggregation needs state Ember's streaming does not keep",
        ));
    }
    let mut merges_by_name = Vec::new();
    for expr in &aggregate.aggr_expr {
        let Expr::AggregateFunction(f) = unaliased(expr) else {
            return Err(unsupported(
                query,
                &format!("cannot keep {expr} between batches"),
            ));
        };
        if f.params.distinct || f.params.filter.is_some() || !f.params.order_by.is_empty() {
            return Err(unsupported(
                query,
                &format!(
                    "{expr}: DISTINCT, FILTER and ORDER BY in a streaming aggregate cannot be \
                     kept between batches"
                ),
            ));
        }
        let merge = match f.func.name() {
            "count" | "sum" => Merge::Sum,
            "min" => Merge::Min,
            "max" => Merge::Max,
            other => {
                return Err(unsupported(
                    query,
                    &format!(
                        "{other}() cannot be kept between batches; streaming aggregations \
                         take count, sum, min and max (an average is sum / count)"
                    ),
                ));
            }
        };
        merges_by_name.push((expr.schema_name().to_string(), merge));
    }
    // Each output column: a group key or an aggregate, under its name.
    let groups = aggregate.group_expr.len();
    // Each output column by name, and which of the aggregate's columns
    // (its keys, then its aggregates) it is.
    let outputs: Vec<(String, usize)> = match projection {
        Some((exprs, schema)) => exprs
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let name = schema.field(i).name().clone();
                match unaliased(e) {
                    Expr::Column(c) => aggregate
                        .schema
                        .index_of_column(c)
                        .map(|at| (name, at))
                        .map_err(SessionError::from),
                    other => Err(unsupported(
                        query,
                        &format!(
                            "output {name} is {other}: a streaming aggregation's outputs are its \
                             group keys and aggregates as they are; compute over them when \
                             reading the output"
                        ),
                    )),
                }
            })
            .collect::<Result<_, _>>()?,
        None => aggregate
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name().clone(), i))
            .collect(),
    };
    let mut keys = Vec::new();
    let mut merges = Vec::new();
    let mut window = None;
    let mut event_key = None;
    let mut session: Option<SessionKey> = None;
    for (name, at) in outputs {
        if at < groups {
            if let Some(found) = session_key(query, &aggregate.group_expr[at], &name)? {
                if session.is_some() {
                    return Err(unsupported(query, "one session_window per aggregation"));
                }
                session = Some(found);
            }
            if let Some((column, _)) = &query.watermark
                && let Expr::Column(c) = unaliased(&aggregate.group_expr[at])
                && c.name.eq_ignore_ascii_case(column)
            {
                event_key = Some(name.clone());
            }
            if let Some((column, _)) = &query.watermark
                && let Some(length) = window_length(&aggregate.group_expr[at], column)
                    .or_else(|| sliding_window_length(aggregate, at, column))
            {
                window = Some((name.clone(), length));
            }
            keys.push(name);
        } else if let Some((_, merge)) = merges_by_name.get(at - groups) {
            merges.push((name, *merge));
        } else {
            return Err(unsupported(
                query,
                &format!("output {name} is not a key or aggregate"),
            ));
        }
    }
    if keys.len() != groups {
        return Err(unsupported(
            query,
            "every GROUP BY key must be an output column, so batches' groups can be matched",
        ));
    }
    if session.is_some() && window.is_some() {
        return Err(unsupported(
            query,
            "a session_window and another window (date_bin, sliding_window) in one aggregation; \
             group by one of them",
        ));
    }
    Ok(Some(Aggregation {
        keys,
        merges,
        window,
        event_key,
        session,
    }))
}

/// The session window group key `expr` (output column `name`) is, if it is
/// one.
fn session_key(
    query: &StreamingQuery,
    expr: &Expr,
    name: &str,
) -> Result<Option<SessionKey>, SessionError> {
    use super::windows::{SESSION_WINDOW, session_gap};
    let Expr::ScalarFunction(f) = unaliased(expr) else {
        return Ok(None);
    };
    if f.func.name() != SESSION_WINDOW {
        return Ok(None);
    }
    let column = match f.args.first().map(unaliased) {
        Some(Expr::Column(c)) => c.name.clone(),
        _ => {
            return Err(unsupported(
                query,
                "session_window's first argument is a time column of the stream",
            ));
        }
    };
    let Some(gap) = session_gap(&f.args) else {
        return Err(unsupported(
            query,
            "session_window's gap is an INTERVAL literal of days, hours, minutes or seconds, \
             above 0",
        ));
    };
    Ok(Some(SessionKey {
        key: name.to_string(),
        column,
        gap,
    }))
}

/// Whether `plan` aggregates, deduplicates or runs a window function
/// anywhere: state a stream would need to keep inside the query.
fn aggregates_within(plan: &LogicalPlan) -> Result<bool, SessionError> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut found = false;
    plan.apply(|n| {
        found |= matches!(
            n,
            LogicalPlan::Aggregate(_) | LogicalPlan::Window(_) | LogicalPlan::Distinct(_)
        );
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(found)
}

/// `SELECT DISTINCT`: every output column is a key, and nothing merges.
fn distinct(
    query: &StreamingQuery,
    plan: &LogicalPlan,
    input: &LogicalPlan,
) -> Result<Option<Aggregation>, SessionError> {
    let nested = aggregates_within(input)?;
    if nested {
        return Err(unsupported(
            query,
            "DISTINCT over an aggregation needs state Ember's streaming does not keep",
        ));
    }
    let keys: Vec<String> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let event_key = query.watermark.as_ref().and_then(|(column, _)| {
        keys.iter()
            .find(|k| k.eq_ignore_ascii_case(column))
            .cloned()
    });
    Ok(Some(Aggregation {
        keys,
        merges: Vec::new(),
        window: None,
        event_key,
        session: None,
    }))
}

/// The window length, in microseconds, when `expr` is `date_bin(interval,
/// column[, origin])`.
fn window_length(expr: &Expr, column: &str) -> Option<i64> {
    let Expr::ScalarFunction(f) = unaliased(expr) else {
        return None;
    };
    if f.func.name() != "date_bin" {
        return None;
    }
    let reads_column = f.args.get(1).is_some_and(|a| {
        a.column_refs()
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(column))
    });
    if !reads_column {
        return None;
    }
    match f.args.first()? {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => {
            Some(i64::from(v.days) * 86_400_000_000 + v.nanoseconds / 1000)
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
            Some(i64::from(v.days) * 86_400_000_000 + i64::from(v.milliseconds) * 1000)
        }
        _ => None,
    }
}

/// The window length, in microseconds, when group key `at` of `aggregate`
/// is a column made by unnesting `sliding_window(column, size, slide)`.
fn sliding_window_length(
    aggregate: &datafusion::logical_expr::Aggregate,
    at: usize,
    column: &str,
) -> Option<i64> {
    use super::windows::{SLIDING_WINDOW, interval_micros};
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let Expr::Column(key) = unaliased(aggregate.group_expr.get(at)?) else {
        return None;
    };
    // The key is named in a projection, over the unnested call.
    let mut made_by_unnest = false;
    let mut length = None;
    let _ = aggregate.input.apply(|node| {
        if let LogicalPlan::Projection(p) = node {
            made_by_unnest |= p.expr.iter().any(|e| {
                matches!(e, Expr::Alias(a) if a.name == key.name
                    && matches!(unaliased(&a.expr), Expr::Column(c) if c.name.contains(SLIDING_WINDOW)))
            });
        }
        node.apply_expressions(|e| {
            e.apply(|sub| {
                if let Expr::ScalarFunction(f) = sub
                    && f.func.name() == SLIDING_WINDOW
                    && f.args.first().is_some_and(|a| {
                        a.column_refs()
                            .iter()
                            .any(|c| c.name.eq_ignore_ascii_case(column))
                    })
                {
                    length = f.args.get(1).and_then(interval_micros);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    length.filter(|_| made_by_unnest)
}

/// `expr` without the aliases around it.
fn unaliased(expr: &Expr) -> &Expr {
    match expr {
        Expr::Alias(a) => unaliased(&a.expr),
        e => e,
    }
}

pub(crate) fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// SQL for timestamp column `column` in microseconds since the epoch, the
/// unit watermarks and windows are reckoned in.
pub(crate) fn micros(column: &str) -> String {
    format!(
        "CAST(arrow_cast({}, 'Timestamp(Microsecond, None)') AS BIGINT)",
        quoted(column)
    )
}

/// The state after a batch, and the rows the batch writes.
pub(crate) struct Merged {
    pub state: Vec<RecordBatch>,
    pub output: Vec<RecordBatch>,
}

/// Merges `batch` (this batch's aggregates) into `state`, and says what to
/// write and keep under `mode`, with windows ending by `watermark` final.
pub(crate) async fn merge(
    agg: &Aggregation,
    mode: OutputMode,
    schema: &SchemaRef,
    state: &[RecordBatch],
    batch: &[RecordBatch],
    watermark: Option<i64>,
) -> Result<Merged, SessionError> {
    let ctx = SessionContext::new();
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
        async move { Ok::<_, SessionError>(ctx.sql(&sql).await?.collect().await?) }
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
) -> Result<Merged, SessionError> {
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
    let rows =
        |sql: String| async move { Ok::<_, SessionError>(ctx.sql(&sql).await?.collect().await?) };
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
) -> Result<Merged, SessionError> {
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
fn mem_table(schema: &SchemaRef, rows: &[RecordBatch]) -> Result<Arc<MemTable>, SessionError> {
    let schema = rows
        .first()
        .map_or_else(|| Arc::clone(schema), RecordBatch::schema);
    Ok(Arc::new(MemTable::try_new(schema, vec![rows.to_vec()])?))
}

/// The largest value of `column` (a timestamp) in `rows`, in microseconds.
pub(crate) fn max_micros(rows: &[RecordBatch]) -> Option<i64> {
    rows.iter()
        .filter_map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().cloned())
        .flat_map(|a| a.iter().flatten().collect::<Vec<i64>>())
        .max()
}

/// Writes `rows` as Arrow IPC to `path`, atomically.
pub(crate) fn save(
    path: &Path,
    schema: &SchemaRef,
    rows: &[RecordBatch],
) -> Result<(), SessionError> {
    let failed =
        |e: String| SessionError::Unsupported(format!("checkpoint {}: {e}", path.display()));
    let mut bytes = Vec::new();
    {
        let mut writer = datafusion::arrow::ipc::writer::FileWriter::try_new(&mut bytes, schema)
            .map_err(|e| failed(e.to_string()))?;
        for batch in rows {
            writer.write(batch).map_err(|e| failed(e.to_string()))?;
        }
        writer.finish().map_err(|e| failed(e.to_string()))?;
    }
    super::write_atomically(path, &bytes).map_err(|e| failed(e.to_string()))
}

/// Reads rows [`save`] wrote.
pub(crate) fn load(path: &Path) -> Result<Vec<RecordBatch>, SessionError> {
    let failed = |e: String| {
        SessionError::Unsupported(format!(
            "checkpoint {}: the state is damaged: {e}",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(|e| failed(e.to_string()))?;
    let reader = datafusion::arrow::ipc::reader::FileReader::try_new(file, None)
        .map_err(|e| failed(e.to_string()))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use datafusion::arrow::array::{StringArray, TimestampMicrosecondArray};
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
