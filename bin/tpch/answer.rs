//! Checking a TPC-H answer: the reference comes from plain DataFusion in
//! this process; an Ember run's CSV is read with the reference's column
//! types and compared as a multiset of rows, floats within a tolerance.

use std::cmp::Ordering;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::{SessionConfig, SessionContext};
use ember_engine::script::split_statements;

use super::{TpchError, query, tables_ddl};

/// Floats are equal within this relative difference.
const RELATIVE_TOLERANCE: f64 = 1e-6;

/// One value of a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    /// A float column's value, compared within the tolerance.
    Float(f64),
    /// Any other value as text (decimals, dates and integers compare exactly).
    Text(String),
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Null => f.write_str("NULL"),
            Cell::Float(x) => write!(f, "{x}"),
            Cell::Text(s) => f.write_str(s),
        }
    }
}

impl Cell {
    fn rank(&self) -> u8 {
        match self {
            Cell::Null => 0,
            Cell::Float(_) => 1,
            Cell::Text(_) => 2,
        }
    }

    fn order(&self, other: &Cell) -> Ordering {
        match (self, other) {
            (Cell::Float(a), Cell::Float(b)) => a.total_cmp(b),
            (Cell::Text(a), Cell::Text(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    fn matches(&self, other: &Cell) -> bool {
        match (self, other) {
            (Cell::Float(a), Cell::Float(b)) => {
                a == b
                    || (a.is_nan() && b.is_nan())
                    || (a - b).abs() <= RELATIVE_TOLERANCE * a.abs().max(b.abs())
            }
            _ => self == other,
        }
    }
}

/// A query's rows, with which columns are floats.
#[derive(Debug, Clone)]
pub struct Answer {
    pub columns: Vec<String>,
    floats: Vec<bool>,
    pub rows: Vec<Vec<Cell>>,
}

impl Answer {
    /// The rows of `batches`, whose columns are `schema`'s.
    pub fn from_batches(schema: &Schema, batches: &[RecordBatch]) -> Result<Self, ArrowError> {
        let floats: Vec<bool> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().is_floating())
            .collect();
        let options = FormatOptions::default();
        let mut rows = Vec::new();
        for batch in batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()?;
            for row in 0..batch.num_rows() {
                let cells = batch
                    .columns()
                    .iter()
                    .zip(&formatters)
                    .zip(&floats)
                    .map(|((column, formatter), &float)| {
                        if column.is_null(row) {
                            Cell::Null
                        } else {
                            cell(formatter.value(row).to_string(), float)
                        }
                    })
                    .collect();
                rows.push(cells);
            }
        }
        Ok(Self {
            columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
            floats,
            rows,
        })
    }

    /// Rows printed as CSV with a header (`ember submit --format csv`),
    /// read as columns like this answer's: floats parsed, the rest text.
    pub fn read_csv(&self, csv: &str) -> Result<Answer, ArrowError> {
        let text_schema = Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|name| Field::new(name, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let reader = datafusion::arrow::csv::ReaderBuilder::new(text_schema.clone())
            .with_header(true)
            .build(std::io::Cursor::new(csv.as_bytes()))?;
        let batches = reader.collect::<Result<Vec<_>, _>>()?;
        let mut answer = Answer::from_batches(&text_schema, &batches)?;
        for row in &mut answer.rows {
            for (value, &float) in row.iter_mut().zip(&self.floats) {
                match value {
                    // Ember prints a NULL as NULL (a string that reads NULL
                    // is quoted, which this reader does not tell apart).
                    Cell::Text(text) if text == "NULL" => *value = Cell::Null,
                    Cell::Text(text) => *value = cell(std::mem::take(text), float),
                    _ => {}
                }
            }
        }
        answer.floats.clone_from(&self.floats);
        Ok(answer)
    }

    /// `None` when `actual` holds the same rows in any order (floats within
    /// the tolerance); otherwise the row counts and the first differing
    /// rows, in sorted order.
    pub fn difference(&self, actual: &Answer) -> Option<String> {
        let expected = sorted(&self.rows);
        let returned = sorted(&actual.rows);
        let same_row = |a: &Vec<Cell>, b: &Vec<Cell>| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.matches(y))
        };
        let first = (0..expected.len().max(returned.len())).find(|&i| {
            match (expected.get(i), returned.get(i)) {
                (Some(a), Some(b)) => !same_row(a, b),
                _ => true,
            }
        })?;
        let show = |rows: &[&Vec<Cell>]| {
            let shown: Vec<String> = rows
                .iter()
                .skip(first)
                .take(3)
                .map(|row| {
                    let cells: Vec<String> = row.iter().map(Cell::to_string).collect();
                    format!("      {}", cells.join(" | "))
                })
                .collect();
            if shown.is_empty() {
                "      (no more rows)".to_string()
            } else {
                shown.join("\n")
            }
        };
        Some(format!(
            "{} rows expected, {} returned; sorted, they differ from row {}:\n    expected:\n{}\n    returned:\n{}",
            expected.len(),
            returned.len(),
            first + 1,
            show(&expected),
            show(&returned)
        ))
    }
}

fn cell(text: String, float: bool) -> Cell {
    match text.parse::<f64>() {
        Ok(x) if float => Cell::Float(x),
        _ => Cell::Text(text),
    }
}

fn sorted(rows: &[Vec<Cell>]) -> Vec<&Vec<Cell>> {
    let mut rows: Vec<&Vec<Cell>> = rows.iter().collect();
    rows.sort_by(|a, b| {
        a.iter()
            .zip(b.iter())
            .map(|(x, y)| x.order(y))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| a.len().cmp(&b.len()))
    });
    rows
}

/// Query `n`'s answer from plain DataFusion, in this process, with
/// `partitions` target partitions, on the tables under `dir`.
pub async fn datafusion_answer(
    dir: &Path,
    n: u32,
    scale: f64,
    partitions: usize,
) -> Result<Answer, TpchError> {
    let ctx = SessionContext::new_with_config(
        SessionConfig::new().with_target_partitions(partitions.max(1)),
    );
    let script = format!("{}{}", tables_ddl(dir), query(n, scale)?);
    let mut answer = None;
    for statement in split_statements(&script) {
        let frame = ctx.sql(&statement.text).await?;
        let schema = frame.schema().as_arrow().clone();
        let batches = frame.collect().await?;
        // The query's rows; DDL (and Q15's view) produce none.
        if statement.text.to_ascii_lowercase().starts_with("select") {
            answer = Some(Answer::from_batches(&schema, &batches)?);
        }
    }
    answer.ok_or(TpchError::NoSuchQuery(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Decimal128Array, Float64Array, StringArray};

    fn answer(names: &[&str], floats: &[Option<f64>], decimals: &[i128]) -> Answer {
        let schema = Arc::new(Schema::new(vec![
            Field::new(names[0], DataType::Utf8, true),
            Field::new(names[1], DataType::Float64, true),
            Field::new(names[2], DataType::Decimal128(15, 2), false),
        ]));
        let keys: Vec<String> = (0..floats.len()).map(|i| format!("k,{i}")).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(keys)),
                Arc::new(Float64Array::from(floats.to_vec())),
                Arc::new(
                    Decimal128Array::from(decimals.to_vec())
                        .with_precision_and_scale(15, 2)
                        .unwrap(),
                ),
            ],
        )
        .unwrap();
        Answer::from_batches(&schema, &[batch]).unwrap()
    }

    #[test]
    fn csv_rows_in_any_order_with_floats_within_tolerance_match() {
        let expected = answer(&["k", "f", "d"], &[Some(1.0), None], &[1234, -5]);
        let csv = "k,f,d\n\"k,1\",NULL,-0.05\n\"k,0\",1.0000000001,12.34\n";
        let actual = expected.read_csv(csv).unwrap();
        assert_eq!(expected.difference(&actual), None);
    }

    #[test]
    fn differences_name_the_counts_and_the_first_differing_rows() {
        let expected = answer(&["k", "f", "d"], &[Some(1.0), Some(2.0)], &[1234, 5]);
        // A decimal off by a cent is a difference; a float off by 1e-3 too.
        for csv in [
            "k,f,d\n\"k,0\",1.0,12.35\n\"k,1\",2.0,0.05\n",
            "k,f,d\n\"k,0\",1.001,12.34\n\"k,1\",2.0,0.05\n",
        ] {
            let why = expected
                .difference(&expected.read_csv(csv).unwrap())
                .unwrap();
            assert!(why.starts_with("2 rows expected, 2 returned"), "{why}");
            assert!(why.contains("k,0"), "{why}");
        }
        let why = expected
            .difference(&expected.read_csv("k,f,d\n").unwrap())
            .unwrap();
        assert!(
            why.contains("0 returned") && why.contains("(no more rows)"),
            "{why}"
        );
        assert!(expected.read_csv("k,f\n\"k,0\",1.0\n").is_err());
    }
}
