//! A day of video views turned into watch time per video, as
//! `examples/watch_time.sql` does, written as an application with a
//! function of its own of each kind Ember ships to executors: the scalar
//! `minutes(seconds)` and the aggregate `watch_minutes(seconds)`.
//!
//! ```text
//! cargo build --release -p watch-time-app
//! ember submit --master local[2] target/release/watch-time-app -- examples/data/views
//! ```
//!
//! Arguments: the views directory (default `examples/data/views/`) and the
//! Parquet file to write (default
//! `target/ember-output/watch_time_per_video.parquet`).

use std::process::ExitCode;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Float64Array};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, ColumnarValue, ScalarUDF, Volatility, create_udaf, create_udf,
};
use ember::output::{OutputFormat, write_rows};
use ember::{App, AppResult, Functions, Session, StatementOutcome};

fn main() -> ExitCode {
    let functions = Functions::new()
        .scalar(minutes())
        .aggregate(watch_minutes());
    App::new("watch-time").functions(functions).run(watch_time)
}

async fn watch_time(session: &mut Session, args: Vec<String>) -> AppResult {
    let views = args.first().map_or("examples/data/views/", String::as_str);
    let out = args.get(1).map_or(
        "target/ember-output/watch_time_per_video.parquet",
        String::as_str,
    );
    session
        .execute(&format!(
            "CREATE EXTERNAL TABLE views (
               event_time    TIMESTAMP NOT NULL,
               user_id       BIGINT    NOT NULL,
               video_id      BIGINT    NOT NULL,
               watch_seconds BIGINT    NOT NULL,
               country       VARCHAR   NOT NULL
             )
             STORED AS CSV
             LOCATION '{views}'
             OPTIONS ('format.has_header' 'true')"
        ))
        .await?;
    // The ten most watched videos of the day.
    let top = session
        .execute(
            "SELECT video_id,
                    minutes(SUM(watch_seconds)) AS minutes,
                    COUNT(*) AS views
             FROM views
             GROUP BY video_id
             ORDER BY minutes DESC
             LIMIT 10",
        )
        .await?;
    if let StatementOutcome::Rows(rows) = top {
        write_rows(&mut std::io::stdout().lock(), OutputFormat::Csv, &rows)?;
    }
    // The full table, one row per video, written as Parquet.
    let written = session
        .execute(&format!(
            "COPY (
               SELECT video_id,
                      watch_minutes(watch_seconds) AS minutes,
                      COUNT(*) AS views,
                      COUNT(DISTINCT user_id) AS viewers
               FROM views
               GROUP BY video_id
               ORDER BY video_id
             ) TO '{out}' STORED AS PARQUET"
        ))
        .await?;
    if let StatementOutcome::Rows(count) = written {
        write_rows(&mut std::io::stdout().lock(), OutputFormat::Csv, &count)?;
    }
    Ok(())
}

/// `minutes(seconds BIGINT) -> DOUBLE`: a number of seconds in minutes.
fn minutes() -> ScalarUDF {
    create_udf(
        "minutes",
        vec![DataType::Int64],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let seconds = ColumnarValue::values_to_arrays(args)?;
            let seconds = seconds[0].as_primitive::<Int64Type>();
            let minutes: Float64Array = seconds.unary(|s| s as f64 / 60.0);
            Ok(ColumnarValue::Array(Arc::new(minutes)))
        }),
    )
}

/// `watch_minutes(seconds BIGINT) -> DOUBLE`: the seconds of a group,
/// summed exactly, in minutes. Partial sums travel between stages as
/// BIGINT, so the answer does not depend on how rows were split.
fn watch_minutes() -> AggregateUDF {
    create_udaf(
        "watch_minutes",
        vec![DataType::Int64],
        Arc::new(DataType::Float64),
        Volatility::Immutable,
        Arc::new(|_| Ok(Box::new(WatchMinutes::default()))),
        Arc::new(vec![DataType::Int64]),
    )
}

#[derive(Debug, Default)]
struct WatchMinutes {
    seconds: i64,
}

impl WatchMinutes {
    fn add(&mut self, values: &ArrayRef) {
        let values = values.as_primitive::<Int64Type>();
        for seconds in values.iter().flatten() {
            self.seconds = self.seconds.wrapping_add(seconds);
        }
    }
}

impl Accumulator for WatchMinutes {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        if let Some(values) = values.first() {
            self.add(values);
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.update_batch(states)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Int64(Some(self.seconds))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(Some(self.seconds as f64 / 60.0)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}
