//! Sliding windows: `sliding_window(ts, INTERVAL size, INTERVAL slide)`,
//! the start of every window of length `size`, one each `slide`, that holds
//! `ts` (Spark's `window(ts, size, slide)`), as a list to `unnest`:
//!
//! ```sql
//! SELECT window_start, k, count(*) AS n
//! FROM (SELECT unnest(sliding_window(ts, INTERVAL '1 minute', INTERVAL '30 seconds'))
//!              AS window_start, k FROM events)
//! GROUP BY window_start, k
//! ```
//!
//! Before a plan runs, the call is rewritten into DataFusion's own
//! functions, `generate_series(date_bin(slide, ts - size) + slide,
//! date_bin(slide, ts), slide)` (the multiples of `slide` above `ts - size`
//! and at most `ts`), so executors need nothing of it; the streaming
//! planner finds it in the plan as written, to know the window's length.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

pub(crate) const SLIDING_WINDOW: &str = "sliding_window";
pub(crate) const SESSION_WINDOW: &str = "session_window";

#[derive(Debug, PartialEq, Eq, Hash)]
struct SlidingWindow {
    signature: Signature,
}

/// Adds `sliding_window` and `session_window` to `ctx`.
pub(crate) fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(SlidingWindow {
        signature: Signature::any(3, Volatility::Immutable),
    }));
    ctx.register_udf(ScalarUDF::from(SessionWindow {
        signature: Signature::any(2, Volatility::Immutable),
    }));
}

/// Argument types as a call would list them.
fn listed(args: &[DataType]) -> String {
    args.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A literal interval's length in microseconds (no months: a month has
/// no fixed length).
pub(crate) fn interval_micros(expr: &Expr) -> Option<i64> {
    match expr {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => {
            Some(i64::from(v.days) * 86_400_000_000 + v.nanoseconds / 1000)
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
            Some(i64::from(v.days) * 86_400_000_000 + i64::from(v.milliseconds) * 1000)
        }
        _ => None,
    }
}

impl ScalarUDFImpl for SlidingWindow {
    fn name(&self) -> &str {
        SLIDING_WINDOW
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [
                ts @ DataType::Timestamp(..),
                DataType::Interval(_),
                DataType::Interval(_),
            ] => Ok(DataType::List(Arc::new(Field::new_list_field(
                ts.clone(),
                true,
            )))),
            _ => plan_err!(
                "sliding_window(timestamp, INTERVAL size, INTERVAL slide), not sliding_window({})",
                listed(args)
            ),
        }
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("sliding_window runs rewritten into generate_series and date_bin")
    }

    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        let [ts, size, slide] = args.as_slice() else {
            return plan_err!("sliding_window takes a timestamp, a size and a slide");
        };
        match (interval_micros(size), interval_micros(slide)) {
            (Some(s), Some(d)) if s > 0 && d > 0 && d <= s => {}
            _ => {
                return plan_err!(
                    "sliding_window's size and slide are INTERVAL literals of days, hours, \
                     minutes or seconds, the slide above 0 and at most the size"
                );
            }
        }
        let date_bin = datafusion::functions::datetime::date_bin();
        let first = date_bin.call(vec![slide.clone(), ts.clone() - size.clone()]) + slide.clone();
        let last = date_bin.call(vec![slide.clone(), ts.clone()]);
        let series = datafusion::functions_nested::range::gen_series_udf();
        Ok(ExprSimplifyResult::Simplified(series.call(vec![
            first,
            last,
            slide.clone(),
        ])))
    }
}

/// Session windows: `session_window(ts, INTERVAL gap)` (Spark's
/// `session_window(ts, gap)`) as a GROUP BY key of a streaming
/// aggregation. A session of a key holds events each less than `gap` after
/// the one before; it starts at its first event and ends `gap` after its
/// last. Which session a row is in depends on the rows around it, so the
/// call stands for the row's own time (`ts`) in a batch's job, and the
/// streaming planner merges those into sessions, within the batch and with
/// the sessions kept from earlier batches (see `state::merge`). Outside a
/// streaming aggregation it is just `ts`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SessionWindow {
    signature: Signature,
}

/// The gap of a `session_window` call, in microseconds, if it is a
/// positive literal interval.
pub(crate) fn session_gap(args: &[Expr]) -> Option<i64> {
    args.get(1).and_then(interval_micros).filter(|g| *g > 0)
}

impl ScalarUDFImpl for SessionWindow {
    fn name(&self) -> &str {
        SESSION_WINDOW
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [ts @ DataType::Timestamp(..), DataType::Interval(_)] => Ok(ts.clone()),
            _ => plan_err!(
                "session_window(timestamp, INTERVAL gap), not session_window({})",
                listed(args)
            ),
        }
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("session_window runs rewritten into its time column")
    }

    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        if session_gap(&args).is_none() {
            return plan_err!(
                "session_window's gap is an INTERVAL literal of days, hours, minutes or \
                 seconds, above 0"
            );
        }
        match args.into_iter().next() {
            Some(ts) => Ok(ExprSimplifyResult::Simplified(ts)),
            None => plan_err!("session_window takes a timestamp and a gap"),
        }
    }
}
