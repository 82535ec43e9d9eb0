//! `ember fuzz-sql`: a differential SQL fuzzer. Each seed's tables, data and
//! queries (from `ember-sqlfuzz`) run on plain DataFusion in one partition,
//! the reference, and on Ember sessions in local modes with several shuffle
//! partition counts; a difference is reported with its seed, a replay
//! command and a minimized query.

use std::fmt::{self, Display, Formatter};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use datafusion::arrow::array::{Array, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::physical_plan::collect;
use datafusion::prelude::{SessionConfig, SessionContext};
use ember_actors::EmberConf;
use ember_actors::config::{ADVISORY_PARTITION_SIZE, MIN_PARTITION_SIZE, SHUFFLE_PARTITIONS};
use ember_engine::distribute::complete_topk_orderings;
use ember_sqlfuzz::generate::generate_tables;
use ember_sqlfuzz::{FileFormat, Query, Table, generate_query, shrink_candidates};
use futures::FutureExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use ember_session::master::Master;
use ember_session::{Session, SessionError, SessionOptions, StatementOutcome};

#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:\n  ember fuzz-sql --seeds 100\n  \
ember fuzz-sql --seed 17 --query 4 --modes 'local[2]' --shuffle-partitions 3 -v")]
pub struct FuzzSqlArgs {
    /// How many seeds to run (from --first-seed up).
    #[arg(long, default_value_t = 20)]
    pub seeds: u64,
    /// The first seed of the range.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Replay one seed.
    #[arg(long, conflicts_with_all = ["seeds", "first_seed"])]
    pub seed: Option<u64>,
    /// With --seed: replay only this query of the seed (counting from 0).
    #[arg(long, requires = "seed")]
    pub query: Option<usize>,
    /// Queries per seed.
    #[arg(long, default_value_t = 20)]
    pub queries_per_seed: usize,
    /// Ember masters to run every query on, separated by commas.
    #[arg(long, value_delimiter = ',', default_value = "local,local[2],local[3]")]
    pub modes: Vec<String>,
    /// Shuffle partition counts (ember.sql.shuffle.partitions) to run every
    /// mode with, separated by commas.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,7")]
    pub shuffle_partitions: Vec<usize>,
    /// Variants a difference's query may be tried in while minimizing it
    /// (0: report it as found).
    #[arg(long, default_value_t = 400)]
    pub minimize_budget: usize,
    /// Corrupt Ember's answers on purpose, to see differences caught:
    /// drop-last-row.
    #[arg(long, hide = true, value_parser = ["drop-last-row"])]
    pub bug: Option<String>,
}

/// Why a campaign could not run (differences are not errors: they are its
/// findings).
#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    #[error("cannot write the data of seed {seed} under {dir}: {source}")]
    Data {
        seed: u64,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("seed {seed}: cannot register table {table} in plain DataFusion: {source}")]
    Register {
        seed: u64,
        table: String,
        source: Box<datafusion::error::DataFusionError>,
    },
    #[error("seed {seed}: cannot start an Ember session on {target}: {source}")]
    Session {
        seed: u64,
        target: Box<Target>,
        source: Box<SessionError>,
    },
    #[error(
        "--modes: '{0}' is not a local master; fuzz-sql runs local, local[N] and local[*] sessions in this process"
    )]
    Mode(String),
    #[error(
        "--modes and --shuffle-partitions each need at least one value (partitions at least 1)"
    )]
    NoTargets,
}

/// A deliberate wrong answer, so tests can watch the fuzzer catch one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// Ember's results lose their last row.
    DropLastRow,
}

/// One Ember configuration every query runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub master: String,
    pub shuffle_partitions: usize,
}

impl Display for Target {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} with {} shuffle partition{}",
            self.master,
            self.shuffle_partitions,
            if self.shuffle_partitions == 1 {
                ""
            } else {
                "s"
            }
        )
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub first_seed: u64,
    pub seeds: u64,
    /// Run only this query of each seed.
    pub only_query: Option<usize>,
    pub queries_per_seed: usize,
    pub targets: Vec<Target>,
    pub minimize_budget: usize,
    pub bug: Option<Bug>,
    /// Print every query and how each target answered it.
    pub verbose: bool,
}

impl Campaign {
    pub fn from_args(args: &FuzzSqlArgs, verbose: bool) -> Result<Self, FuzzError> {
        let mut targets = Vec::new();
        for mode in &args.modes {
            let mode = mode.trim();
            match Master::parse(mode, ember_session::master::available_cores()) {
                Ok(Master::Local { .. }) => {}
                _ => return Err(FuzzError::Mode(mode.to_string())),
            }
            for &shuffle_partitions in &args.shuffle_partitions {
                if shuffle_partitions == 0 {
                    return Err(FuzzError::NoTargets);
                }
                targets.push(Target {
                    master: mode.to_string(),
                    shuffle_partitions,
                });
            }
        }
        if targets.is_empty() {
            return Err(FuzzError::NoTargets);
        }
        Ok(Campaign {
            first_seed: args.seed.unwrap_or(args.first_seed),
            seeds: if args.seed.is_some() { 1 } else { args.seeds },
            only_query: args.query,
            queries_per_seed: args.queries_per_seed,
            targets,
            minimize_budget: args.minimize_budget,
            bug: args.bug.as_ref().map(|_| Bug::DropLastRow),
            verbose,
        })
    }
}

/// How a difference shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DiffKind {
    /// Both answered, with different rows.
    RowsDiffer,
    /// Ember failed where DataFusion answered.
    EmberFailed,
    /// Ember answered where DataFusion failed.
    OnlyEmberAnswered,
    /// Ember did not answer in time.
    TimedOut,
}

impl Display for DiffKind {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiffKind::RowsDiffer => "rows differ",
            DiffKind::EmberFailed => "Ember failed, DataFusion answered",
            DiffKind::OnlyEmberAnswered => "Ember answered, DataFusion failed",
            DiffKind::TimedOut => "Ember timed out",
        })
    }
}

/// One query on which a target disagreed with the reference.
#[derive(Debug, Clone)]
pub struct Difference {
    pub seed: u64,
    pub query: usize,
    pub target: Target,
    pub kind: DiffKind,
    pub sql: String,
    /// What differs, for people.
    pub detail: String,
    /// Whether plain DataFusion, planned as Ember plans (the target's
    /// partitions, Ember's settings) but in one process, gives Ember's
    /// answer: then the difference is DataFusion's own, between its plans
    /// for one partition and for several (an overflow met on one path and
    /// not the other, say), and not Ember's way of running the plan.
    pub datafusion_gives_embers_answer: Option<bool>,
    /// Ember failed evaluating an expression on a value (an overflow, a
    /// cast out of range, a division by zero) where DataFusion answered: a
    /// stage runs every input it is given, while DataFusion in one process
    /// may never read an input (the probe side of a join whose build side
    /// is empty, say). Which rows an expression meets depends on the plan,
    /// in Spark as here; such a failure is reported apart, not as a wrong
    /// answer.
    pub plan_dependent_error: bool,
    /// The rows differ only in float values, and plain DataFusion's own
    /// plans disagree on them too: a float sum depends on the order it
    /// adds in (`avg` over extreme BIGINTs, where one addition cancels
    /// another), and no order is the right one.
    pub order_dependent_floats: bool,
    pub minimized: Option<String>,
    /// What differs on the minimized query (on the first target it
    /// differed on).
    pub minimized_detail: Option<String>,
    /// Ember's error without numbers, when it failed.
    pub error_shape: Option<String>,
    pub replay: String,
}

impl Display for Difference {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "DIFFERENCE seed {}, query {}, {}: {}",
            self.seed, self.query, self.target, self.kind
        )?;
        writeln!(f, "  query:     {}", self.sql)?;
        for line in self.detail.lines() {
            writeln!(f, "  {line}")?;
        }
        match self.datafusion_gives_embers_answer {
            Some(true) => writeln!(
                f,
                "  plain DataFusion with Ember's settings and {} partitions gives Ember's answer: DataFusion's own difference, below Ember's stages",
                self.target.shuffle_partitions
            )?,
            Some(false) => writeln!(
                f,
                "  plain DataFusion with Ember's settings and {} partitions does not give Ember's answer: the cause is in how Ember runs the plan",
                self.target.shuffle_partitions
            )?,
            None => {}
        }
        if self.plan_dependent_error {
            writeln!(
                f,
                "  an evaluation error on a value DataFusion's plan never read: which rows an expression meets depends on the plan"
            )?;
        }
        if self.order_dependent_floats {
            writeln!(
                f,
                "  only float values differ, and DataFusion's own plans disagree on them: a float sum depends on its order"
            )?;
        }
        if let Some(minimized) = &self.minimized {
            writeln!(f, "  minimized: {minimized}")?;
            for line in self.minimized_detail.iter().flat_map(|d| d.lines()) {
                writeln!(f, "    {line}")?;
            }
        }
        writeln!(f, "  replay:    {}", self.replay)
    }
}

/// What a campaign did and found.
#[derive(Debug, Default)]
pub struct Report {
    pub seeds: u64,
    /// Queries generated.
    pub queries: usize,
    /// Queries plain DataFusion could not plan (not run on Ember).
    pub discarded: usize,
    /// Query runs on Ember targets.
    pub runs: usize,
    /// Runs that agreed with the reference, and how many of them because
    /// both failed.
    pub agreed: usize,
    pub both_failed: usize,
    pub differences: Vec<Difference>,
    pub elapsed: Duration,
}

impl Display for Report {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fuzz-sql: {} seeds, {} queries ({} discarded: plain DataFusion could not plan them), {} runs on Ember in {:.1} s",
            self.seeds,
            self.queries,
            self.discarded,
            self.runs,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "  agreed with plain DataFusion: {} ({} of them failing on both)",
            self.agreed, self.both_failed
        )?;
        if self.differences.is_empty() {
            return writeln!(f, "  no differences");
        }
        let mut kinds: Vec<DiffKind> = self.differences.iter().map(|d| d.kind).collect();
        kinds.sort();
        kinds.dedup();
        let by_kind: Vec<String> = kinds
            .iter()
            .map(|k| {
                let n = self.differences.iter().filter(|d| d.kind == *k).count();
                format!("{n} {k}")
            })
            .collect();
        let mut minimized: Vec<&str> = self
            .differences
            .iter()
            .map(|d| d.minimized.as_deref().unwrap_or(&d.sql))
            .collect();
        minimized.sort_unstable();
        minimized.dedup();
        writeln!(
            f,
            "  differences: {} ({}); {} distinct minimized queries",
            self.differences.len(),
            by_kind.join(", "),
            minimized.len()
        )?;
        let count = |cause: Cause| {
            self.differences
                .iter()
                .filter(|d| d.cause() == cause)
                .count()
        };
        writeln!(
            f,
            "  of them Ember's own: {}; DataFusion's own (plain DataFusion planned as Ember plans gives Ember's answer): {}; evaluation errors on values DataFusion never read: {}; float sums that depend on their order: {}",
            count(Cause::Embers),
            count(Cause::DataFusions),
            count(Cause::PlanDependentError),
            count(Cause::OrderDependentFloats),
        )
    }
}

impl Report {
    /// Differences not explained by DataFusion itself: Ember's to fix.
    pub fn embers_own(&self) -> impl Iterator<Item = &Difference> {
        self.differences
            .iter()
            .filter(|d| d.cause() == Cause::Embers)
    }
}

/// Whose a difference is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Ember's way of running the plan: a bug to fix.
    Embers,
    /// Plain DataFusion planned as Ember plans gives Ember's answer.
    DataFusions,
    /// An expression failed on a value DataFusion's plan never read.
    PlanDependentError,
    /// Float values that depend on the order they were summed in.
    OrderDependentFloats,
}

impl Difference {
    pub fn cause(&self) -> Cause {
        if self.plan_dependent_error {
            Cause::PlanDependentError
        } else if self.order_dependent_floats {
            Cause::OrderDependentFloats
        } else if self.datafusion_gives_embers_answer == Some(true) {
            Cause::DataFusions
        } else {
            Cause::Embers
        }
    }
}

/// More runs of DataFusion's partitioned plan, when only floats differ,
/// to see whether its own float sums depend on their order.
const FLOAT_ORDER_TRIES: usize = 8;

/// Whether two answers are the same once every float value is set aside
/// (a float against a NULL still differs).
fn same_but_floats(expected: &[Row], actual: &[Row], ordered: bool) -> bool {
    let blank = |rows: &[Row]| -> Vec<Row> {
        rows.iter()
            .map(|row| {
                row.iter()
                    .map(|cell| match cell {
                        Cell::Float(_) => Cell::Text("<float>".to_string()),
                        other => other.clone(),
                    })
                    .collect()
            })
            .collect()
    };
    compare(&blank(expected), &blank(actual), ordered).is_none()
}

/// Whether Ember's error is one an expression raises on a value: such an
/// error depends on which rows the plan feeds the expression.
fn is_evaluation_error(error: &str) -> bool {
    const SHAPES: &[&str] = &[
        "is too large to store in a Decimal",
        "is too small to store in a Decimal",
        "overflow",
        "Overflow",
        "Divide by zero",
        "Division by zero",
        "division by zero",
        "Cast error",
        "out of range",
    ];
    let error = first_line(error);
    SHAPES.iter().any(|shape| error.contains(shape))
}

/// A result cell: floats kept as numbers to compare within a tolerance.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Float(f64),
    /// A decimal, as printed.
    Decimal(String),
    Text(String),
}

/// A decimal's value, when it has more significant digits than an `f64`
/// holds (16 or more): only such a value can carry float noise, from an
/// expression that went through a float (`avg` over a float, say).
fn wide_decimal(text: &str) -> Option<f64> {
    let digits = text
        .chars()
        .filter(char::is_ascii_digit)
        .skip_while(|c| *c == '0')
        .count();
    (digits > 15).then(|| text.parse().ok()).flatten()
}

impl Cell {
    fn same(&self, other: &Cell) -> bool {
        match (self, other) {
            (Cell::Float(a), Cell::Float(b)) => {
                a == b
                    || (a.is_nan() && b.is_nan())
                    || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-12
            }
            // Equal, or the same float but for its last few bits.
            (Cell::Decimal(a), Cell::Decimal(b)) => {
                a == b
                    || wide_decimal(a).zip(wide_decimal(b)).is_some_and(|(a, b)| {
                        (a - b).abs() <= 4.0 * f64::EPSILON * a.abs().max(b.abs())
                    })
            }
            _ => self == other,
        }
    }

    /// A sort key that puts rows equal within the tolerance together.
    fn key(&self) -> String {
        match self {
            Cell::Null => "\u{0}NULL".to_string(),
            Cell::Float(x) => format!("{x:.6e}"),
            Cell::Decimal(d) => match wide_decimal(d) {
                Some(x) => format!("{x:.12e}"),
                None => d.clone(),
            },
            Cell::Text(s) => s.clone(),
        }
    }
}

impl Display for Cell {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Cell::Null => f.write_str("NULL"),
            Cell::Float(x) => write!(f, "{x}"),
            Cell::Decimal(s) | Cell::Text(s) => write!(f, "{s:?}"),
        }
    }
}

type Row = Vec<Cell>;

#[derive(Debug, Clone)]
enum Outcome {
    Rows(Vec<Row>),
    Failed(String),
    TimedOut,
}

fn show_row(row: &Row) -> String {
    let cells: Vec<String> = row.iter().map(ToString::to_string).collect();
    format!("({})", cells.join(", "))
}

fn to_rows(batches: &[RecordBatch]) -> Result<Vec<Row>, String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let mut columns: Vec<Box<dyn Fn(usize) -> Cell + '_>> = Vec::new();
        for column in batch.columns() {
            if column.data_type().is_floating() {
                let floats = cast(column, &DataType::Float64).map_err(|e| e.to_string())?;
                let floats = floats
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .cloned()
                    .ok_or("a float column did not cast to Float64")?;
                columns.push(Box::new(move |i| {
                    if floats.is_null(i) {
                        Cell::Null
                    } else {
                        Cell::Float(floats.value(i))
                    }
                }));
            } else {
                let formatter = ArrayFormatter::try_new(column.as_ref(), &options)
                    .map_err(|e| e.to_string())?;
                let column = column.clone();
                let decimal = matches!(
                    column.data_type(),
                    DataType::Decimal128(..) | DataType::Decimal256(..)
                );
                columns.push(Box::new(move |i| {
                    if column.is_null(i) {
                        Cell::Null
                    } else if decimal {
                        Cell::Decimal(formatter.value(i).to_string())
                    } else {
                        Cell::Text(formatter.value(i).to_string())
                    }
                }));
            }
        }
        for i in 0..batch.num_rows() {
            rows.push(columns.iter().map(|c| c(i)).collect());
        }
    }
    Ok(rows)
}

/// `None` when the rows agree; else what differs.
fn compare(expected: &[Row], actual: &[Row], ordered: bool) -> Option<String> {
    let same_row = |a: &Row, b: &Row| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y));
    if ordered {
        if expected.len() == actual.len()
            && expected.iter().zip(actual).all(|(a, b)| same_row(a, b))
        {
            return None;
        }
        let at = expected
            .iter()
            .zip(actual)
            .position(|(a, b)| !same_row(a, b))
            .unwrap_or(expected.len().min(actual.len()));
        let row = |rows: &[Row]| {
            rows.get(at)
                .map(show_row)
                .unwrap_or_else(|| "no row".into())
        };
        return Some(format!(
            "expected:  {} rows (in order)\nactual:    {} rows\nfirst difference at row {at}: expected {}, got {}",
            expected.len(),
            actual.len(),
            row(expected),
            row(actual)
        ));
    }
    let sort = |rows: &[Row]| {
        let mut keyed: Vec<(Vec<String>, Row)> = rows
            .iter()
            .map(|r| (r.iter().map(Cell::key).collect(), r.clone()))
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        keyed.into_iter().map(|(_, r)| r).collect::<Vec<Row>>()
    };
    let (expected, actual) = (sort(expected), sort(actual));
    if expected.len() == actual.len() && expected.iter().zip(&actual).all(|(a, b)| same_row(a, b)) {
        return None;
    }
    // The multiset difference both ways, for people to read.
    let mut unmatched: Vec<Option<&Row>> = actual.iter().map(Some).collect();
    let mut missing = Vec::new();
    for row in &expected {
        match unmatched
            .iter_mut()
            .find(|slot| slot.is_some_and(|r| same_row(r, row)))
        {
            Some(slot) => *slot = None,
            None => missing.push(row),
        }
    }
    let extra: Vec<&Row> = unmatched.into_iter().flatten().collect();
    if missing.is_empty() && extra.is_empty() {
        // Equal within the tolerance, but sorted apart by their keys.
        return None;
    }
    let list = |rows: &[&Row]| {
        let mut shown: Vec<String> = rows.iter().take(5).map(|r| show_row(r)).collect();
        if rows.len() > 5 {
            shown.push(format!("... {} more", rows.len() - 5));
        }
        shown.join(" ")
    };
    Some(format!(
        "expected:  {} rows (as a multiset)\nactual:    {} rows\nmissing:   {} rows: {}\nextra:     {} rows: {}",
        expected.len(),
        actual.len(),
        missing.len(),
        list(&missing),
        extra.len(),
        list(&extra)
    ))
}

/// How a run differs from the reference, if it does.
fn classify(expected: &Outcome, actual: &Outcome, ordered: bool) -> Option<(DiffKind, String)> {
    match (expected, actual) {
        (_, Outcome::TimedOut) => Some((
            DiffKind::TimedOut,
            format!("no answer within {} s", QUERY_TIMEOUT.as_secs()),
        )),
        (Outcome::Rows(e), Outcome::Rows(a)) => {
            compare(e, a, ordered).map(|d| (DiffKind::RowsDiffer, d))
        }
        (Outcome::Rows(e), Outcome::Failed(error)) => Some((
            DiffKind::EmberFailed,
            format!(
                "expected:  {} rows\nEmber:     {}",
                e.len(),
                first_line(error)
            ),
        )),
        (Outcome::Failed(error), Outcome::Rows(a)) => Some((
            DiffKind::OnlyEmberAnswered,
            format!(
                "DataFusion: {}\nEmber:     {} rows",
                first_line(error),
                a.len()
            ),
        )),
        (Outcome::Failed(_), Outcome::Failed(_)) | (Outcome::TimedOut, _) => None,
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// The error a minimized query must keep failing with: its first line
/// without numbers, which name plan nodes and partitions.
fn error_shape(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Failed(e) => Some(
            first_line(e)
                .chars()
                .filter(|c| !c.is_ascii_digit())
                .collect(),
        ),
        _ => None,
    }
}

/// How long one query may run on Ember before it counts as a difference.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// What plain DataFusion made of a query.
enum Reference {
    /// It could not plan it: the query is discarded.
    Unplannable(String),
    Ran(Outcome),
}

async fn run_datafusion(ctx: &SessionContext, sql: &str) -> Reference {
    let run = async {
        let frame = match ctx.sql(sql).await {
            Ok(frame) => frame,
            Err(e) => return Reference::Unplannable(e.to_string()),
        };
        let task = frame.task_ctx();
        // With DataFusion's wrong-answer bug in a TopK over `UNION ALL`
        // branches fixed, as Ember fixes it (seed 268, query 11).
        let plan = match frame
            .create_physical_plan()
            .await
            .and_then(complete_topk_orderings)
        {
            Ok(plan) => plan,
            Err(e) => return Reference::Unplannable(e.to_string()),
        };
        Reference::Ran(match collect(plan, std::sync::Arc::new(task)).await {
            Ok(batches) => match to_rows(&batches) {
                Ok(rows) => Outcome::Rows(rows),
                Err(e) => Outcome::Failed(e),
            },
            Err(e) => Outcome::Failed(e.to_string()),
        })
    };
    match std::panic::AssertUnwindSafe(run).catch_unwind().await {
        Ok(reference) => reference,
        Err(panic) => Reference::Ran(Outcome::Failed(format!(
            "panicked: {}",
            panic_text(&*panic)
        ))),
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".to_string())
}

/// A seed's data on disk, registered in plain DataFusion as the reference.
struct SeedData {
    _dir: tempfile::TempDir,
    ddl: Vec<String>,
    reference: SessionContext,
}

impl SeedData {
    async fn write(seed: u64, tables: &[Table]) -> Result<Self, FuzzError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ember-fuzz-sql-{seed}-"))
            .tempdir()
            .map_err(|source| FuzzError::Data {
                seed,
                dir: std::env::temp_dir(),
                source,
            })?;
        let io = |source: std::io::Error| FuzzError::Data {
            seed,
            dir: dir.path().to_path_buf(),
            source,
        };
        // With DataFusion's wrong-answer bug on constants an outer join pads
        // with NULLs fixed, as Ember fixes it (seed 1062, query 3).
        let reference = ember_engine::session::planning_context(
            SessionConfig::new().with_target_partitions(1),
            None,
        );
        let mut ddl = Vec::new();
        for table in tables {
            let location = dir.path().join(&table.name);
            std::fs::create_dir_all(&location).map_err(io)?;
            // Parquet from CSV through DataFusion; a table without rows
            // stays CSV, so its directory has files to read a schema from.
            let mut table = table.clone();
            if table.format == FileFormat::Parquet && table.rows() == 0 {
                table.format = FileFormat::Csv;
            }
            for file in 0..table.files.len() {
                match table.format {
                    FileFormat::Csv => {
                        std::fs::write(location.join(format!("part-{file}.csv")), table.csv(file))
                            .map_err(io)?;
                    }
                    FileFormat::Parquet if table.files[file].is_empty() => {}
                    FileFormat::Parquet => {
                        let stage = dir
                            .path()
                            .join("stage")
                            .join(format!("{}-{file}", table.name));
                        std::fs::create_dir_all(&stage).map_err(io)?;
                        std::fs::write(stage.join("part.csv"), table.csv(file)).map_err(io)?;
                        let mut staged = table.clone();
                        staged.name = "fuzz_stage".to_string();
                        staged.format = FileFormat::Csv;
                        let target = location.join(format!("part-{file}.parquet"));
                        let statements = [
                            staged.ddl(&format!("{}/", stage.display())),
                            format!(
                                "COPY (SELECT * FROM fuzz_stage) TO '{}' STORED AS PARQUET",
                                target.display()
                            ),
                            "DROP TABLE fuzz_stage".to_string(),
                        ];
                        for statement in statements {
                            run_statement(&reference, &statement)
                                .await
                                .map_err(|source| FuzzError::Register {
                                    seed,
                                    table: table.name.clone(),
                                    source: Box::new(source),
                                })?;
                        }
                    }
                }
            }
            let statement = table.ddl(&format!("{}/", location.display()));
            run_statement(&reference, &statement)
                .await
                .map_err(|source| FuzzError::Register {
                    seed,
                    table: table.name.clone(),
                    source: Box::new(source),
                })?;
            ddl.push(statement);
        }
        Ok(SeedData {
            _dir: dir,
            ddl,
            reference,
        })
    }

    /// Plain DataFusion planned as Ember plans over `partitions` slots, in
    /// one process: tells a split-into-tasks bug from a DataFusion one.
    async fn datafusion_like_ember(&self, partitions: usize) -> Option<SessionContext> {
        let ctx = ember_engine::session::planning_context(
            ember_engine::session::planning_config(partitions),
            None,
        );
        for statement in &self.ddl {
            run_statement(&ctx, statement).await.ok()?;
        }
        Some(ctx)
    }
}

async fn run_statement(
    ctx: &SessionContext,
    sql: &str,
) -> Result<(), datafusion::error::DataFusionError> {
    ctx.sql(sql).await?.collect().await.map(|_| ())
}

async fn start_session(target: &Target, ddl: &[String], seed: u64) -> Result<Session, FuzzError> {
    let failed = |source: SessionError| FuzzError::Session {
        seed,
        target: Box::new(target.clone()),
        source: Box::new(source),
    };
    let master = Master::parse(&target.master, ember_session::master::available_cores())
        .map_err(|_| FuzzError::Mode(target.master.clone()))?;
    let mut conf = EmberConf::new();
    conf.set(SHUFFLE_PARTITIONS, &target.shuffle_partitions.to_string())
        .map_err(|e| failed(e.into()))?;
    // Small reduce partitions are joined in runs of a few kilobytes, so
    // that the fuzzer's small tables are coalesced in varied ways rather
    // than always into one task.
    for (key, value) in [(ADVISORY_PARTITION_SIZE, "4k"), (MIN_PARTITION_SIZE, "1")] {
        conf.set(key, value).map_err(|e| failed(e.into()))?;
    }
    let mut session = Session::start(SessionOptions {
        master,
        conf,
        functions: ember_engine::Functions::new(),
        listener: None,
        files: vec![],
        cluster: None,
    })
    .await
    .map_err(failed)?;
    for statement in ddl {
        session.execute(statement).await.map_err(failed)?;
    }
    Ok(session)
}

async fn run_ember(session: &mut Session, sql: &str, bug: Option<Bug>) -> Outcome {
    let run = std::panic::AssertUnwindSafe(session.execute(sql)).catch_unwind();
    match tokio::time::timeout(QUERY_TIMEOUT, run).await {
        Err(_) => Outcome::TimedOut,
        Ok(Err(panic)) => Outcome::Failed(format!("panicked: {}", panic_text(&*panic))),
        Ok(Ok(Err(e))) => Outcome::Failed(e.to_string()),
        Ok(Ok(Ok(StatementOutcome::Rows(output)))) => match to_rows(&output.batches) {
            Ok(mut rows) => {
                if bug == Some(Bug::DropLastRow) {
                    rows.pop();
                }
                Outcome::Rows(rows)
            }
            Err(e) => Outcome::Failed(e),
        },
        Ok(Ok(Ok(other))) => Outcome::Failed(format!("a query gave no rows but {other:?}")),
    }
}

/// Called after each seed and target with the campaign's report so far.
pub type Progress<'a> = &'a dyn Fn(&Report);

/// Runs a campaign. Differences are findings, in the report; errors are
/// what kept it from running.
pub async fn run_campaign(
    campaign: &Campaign,
    progress: Progress<'_>,
) -> Result<Report, FuzzError> {
    let started = Instant::now();
    let mut report = Report::default();
    for seed in campaign.first_seed..campaign.first_seed.saturating_add(campaign.seeds) {
        run_seed(campaign, seed, &mut report, progress).await?;
        report.seeds += 1;
        report.elapsed = started.elapsed();
        progress(&report);
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

async fn run_seed(
    campaign: &Campaign,
    seed: u64,
    report: &mut Report,
    progress: Progress<'_>,
) -> Result<(), FuzzError> {
    let tables = generate_tables(seed);
    let indices: Vec<usize> = match campaign.only_query {
        Some(k) => vec![k],
        None => (0..campaign.queries_per_seed).collect(),
    };
    let queries: Vec<(usize, Query)> = indices
        .into_iter()
        .map(|k| (k, generate_query(seed, &tables, k)))
        .collect();
    let data = SeedData::write(seed, &tables).await?;
    if campaign.verbose {
        for table in &tables {
            outln!(
                "seed {seed}: table {} ({}), {:?}, {} rows in {} files",
                table.name,
                table.column_list(),
                table.format,
                table.rows(),
                table.files.len()
            );
        }
    }
    let mut planned = Vec::new();
    for (k, query) in queries {
        report.queries += 1;
        let sql = query.sql();
        match run_datafusion(&data.reference, &sql).await {
            Reference::Unplannable(why) => {
                report.discarded += 1;
                tracing::debug!(seed, query = k, %why, "discarded: DataFusion cannot plan it");
                if campaign.verbose {
                    outln!(
                        "seed {seed} query {k}: discarded ({})\n  {sql}",
                        first_line(&why)
                    );
                }
            }
            Reference::Ran(outcome) => {
                if campaign.verbose {
                    let answer = match &outcome {
                        Outcome::Rows(rows) => format!("{} rows", rows.len()),
                        Outcome::Failed(e) => format!("failed: {}", first_line(e)),
                        Outcome::TimedOut => "timed out".to_string(),
                    };
                    outln!("seed {seed} query {k}: DataFusion {answer}\n  {sql}");
                }
                planned.push((k, query, outcome));
            }
        }
    }
    for target in &campaign.targets {
        let mut session = start_session(target, &data.ddl, seed).await?;
        for (k, query, expected) in &planned {
            let sql = query.sql();
            let actual = run_ember(&mut session, &sql, campaign.bug).await;
            report.runs += 1;
            let Some((kind, detail)) = classify(expected, &actual, query.is_ordered()) else {
                report.agreed += 1;
                if matches!(actual, Outcome::Failed(_)) {
                    report.both_failed += 1;
                }
                continue;
            };
            tracing::info!(seed, query = k, %target, %kind, "difference");
            if kind == DiffKind::TimedOut {
                // The stuck job may hold the session; start afresh.
                session.canceller()("timed out");
                let _ = tokio::time::timeout(Duration::from_secs(5), session.stop()).await;
                session = start_session(target, &data.ddl, seed).await?;
            }
            let shape = error_shape(&actual);
            // A query that differs the same way on several targets is
            // minimized once, on the first.
            let earlier = report.differences.iter().find(|d| {
                d.seed == seed && d.query == *k && d.kind == kind && d.error_shape == shape
            });
            let (minimized, minimized_detail) = match earlier {
                Some(d) => (d.minimized.clone(), d.minimized_detail.clone()),
                None if kind == DiffKind::TimedOut || campaign.minimize_budget == 0 => (None, None),
                None => minimize(campaign, &data, &mut session, query, kind, shape.as_deref())
                    .await
                    .map(|(small, detail)| (Some(small.sql()), Some(detail)))
                    .unwrap_or_default(),
            };
            let like_ember_ctx = data.datafusion_like_ember(target.shuffle_partitions).await;
            let run_like_ember = async |ctx: &Option<_>| match ctx {
                Some(ctx) => match run_datafusion(ctx, &sql).await {
                    Reference::Ran(outcome) => Some(outcome),
                    Reference::Unplannable(_) => None,
                },
                None => None,
            };
            let mut like_ember = run_like_ember(&like_ember_ctx).await;
            // Whether DataFusion's own partitioned plan sums floats in
            // another order than the reference depends on which thread
            // finishes first: when only floats differ, it gets a few more
            // tries to show it, so the verdict does not hang on one run.
            if let (Outcome::Rows(e), Outcome::Rows(a)) = (expected, &actual)
                && same_but_floats(e, a, query.is_ordered())
            {
                for _ in 0..FLOAT_ORDER_TRIES {
                    match &like_ember {
                        Some(Outcome::Rows(d)) if compare(e, d, query.is_ordered()).is_none() => {}
                        _ => break,
                    }
                    like_ember = run_like_ember(&like_ember_ctx).await;
                }
            }
            let datafusion_gives_embers_answer = like_ember
                .as_ref()
                .map(|outcome| classify(outcome, &actual, query.is_ordered()).is_none());
            let ordered = query.is_ordered();
            let order_dependent_floats = match (expected, &actual, &like_ember) {
                (Outcome::Rows(e), Outcome::Rows(a), Some(Outcome::Rows(d))) => {
                    same_but_floats(e, a, ordered)
                        && same_but_floats(e, d, ordered)
                        && compare(e, d, ordered).is_some()
                }
                _ => false,
            };
            let difference = Difference {
                seed,
                query: *k,
                target: target.clone(),
                kind,
                sql,
                detail,
                datafusion_gives_embers_answer,
                plan_dependent_error: kind == DiffKind::EmberFailed
                    && matches!(&actual, Outcome::Failed(e) if is_evaluation_error(e)),
                order_dependent_floats,
                minimized,
                minimized_detail,
                error_shape: shape,
                replay: format!(
                    "ember fuzz-sql --seed {seed} --query {k} --modes '{}' --shuffle-partitions {}",
                    target.master, target.shuffle_partitions
                ),
            };
            outln!("{difference}");
            report.differences.push(difference);
            progress(report);
        }
        session.stop().await;
    }
    Ok(())
}

/// Shrinks `query` while it still differs the same way on `session`; the
/// smallest variant found and what differs on it, if any variant does.
async fn minimize(
    campaign: &Campaign,
    data: &SeedData,
    session: &mut Session,
    query: &Query,
    kind: DiffKind,
    shape: Option<&str>,
) -> Option<(Query, String)> {
    let mut current = query.clone();
    let mut found = None;
    let mut tried = 0;
    'shrink: while tried < campaign.minimize_budget {
        for candidate in shrink_candidates(&current) {
            if tried >= campaign.minimize_budget {
                break 'shrink;
            }
            tried += 1;
            let sql = candidate.sql();
            let Reference::Ran(expected) = run_datafusion(&data.reference, &sql).await else {
                continue;
            };
            let actual = run_ember(session, &sql, campaign.bug).await;
            match classify(&expected, &actual, candidate.is_ordered()) {
                Some((k, detail)) if k == kind && error_shape(&actual).as_deref() == shape => {
                    current = candidate;
                    found = Some(detail);
                    continue 'shrink;
                }
                _ => {}
            }
        }
        break;
    }
    tracing::debug!(tried, "minimized");
    found.map(|detail| (current, detail))
}

/// `ember fuzz-sql`.
pub fn run(args: FuzzSqlArgs, verbose: bool) -> ExitCode {
    let campaign = match Campaign::from_args(&args, verbose) {
        Ok(c) => c,
        Err(e) => return crate::cli::fail(&e.to_string()),
    };
    let total = campaign.seeds;
    let bar = if std::io::stderr().is_terminal() && !verbose {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("[fuzz-sql] {bar:30} {pos}/{len} seeds {msg} ({elapsed})")
        {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let progress = |report: &Report| {
        bar.set_position(report.seeds);
        bar.set_message(format!(
            "{} queries, {} differences",
            report.queries,
            report.differences.len()
        ));
    };
    let system = actix::System::new();
    let outcome = system.block_on(async { run_campaign(&campaign, &progress).await });
    bar.finish_and_clear();
    match outcome {
        Ok(report) => {
            print!("{report}");
            if report.embers_own().next().is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => crate::cli::fail(&e.to_string()),
    }
}
