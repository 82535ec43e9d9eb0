//! Which streaming aggregations Ember keeps state for, read from a
//! query's logical plan: its group keys, how each aggregate merges, its
//! event-time window or session window. The state itself is kept and
//! merged per partition on executors (`ember_engine::stream_state`).

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, LogicalPlan};

pub(crate) use ember_engine::stream_state::{Aggregation, Merge, SessionKey, micros, quoted};

use super::StreamingQuery;
use crate::session::SessionError;

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

/// The largest value of `column` (a timestamp) in `rows`, in microseconds.
pub(crate) fn max_micros(rows: &[RecordBatch]) -> Option<i64> {
    rows.iter()
        .filter_map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().cloned())
        .flat_map(|a| a.iter().flatten().collect::<Vec<i64>>())
        .max()
}
