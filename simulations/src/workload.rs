//! The jobs simulations run: small SQL queries over generated data (no
//! files, so nothing leaves the simulated world), and their right answers
//! from a plain fault-free DataFusion run.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;

/// Every query shuffles at least once.
pub const QUERIES: [&str; 4] = [
    "SELECT v % 13 AS k, count(*) AS n, sum(v) AS s FROM generate_series(1, 20000) AS t(v) GROUP BY v % 13",
    "SELECT a.k, count(*) AS n FROM (SELECT v % 50 AS k FROM generate_series(1, 3000) AS t(v)) a \
     JOIN (SELECT v % 50 AS k, v FROM generate_series(1, 200) AS t(v)) b ON a.k = b.k GROUP BY a.k",
    "SELECT v % 97 AS k, max(v) AS m FROM generate_series(1, 30000) AS t(v) GROUP BY v % 97 ORDER BY m DESC LIMIT 10",
    "SELECT count(DISTINCT v % 1000) AS d, count(*) AS n FROM generate_series(1, 25000) AS t(v)",
];

/// The right rows of every query, by query index (sorted lines).
pub type Answers = Arc<Vec<Vec<String>>>;

/// Partitions each shuffle has.
pub const PARTITIONS: usize = 4;

/// Rows as lines of `|`-separated cells, in their order. A column that
/// cannot be shown gives its error as each of its cells.
pub fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default();
    let mut out = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).map_err(|e| e.to_string()))
            .collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| match f {
                    Ok(f) => f.value(row).to_string(),
                    Err(e) => e.clone(),
                })
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

/// Rows as sorted lines, to compare results as multisets.
pub fn lines(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = rows(batches);
    out.sort();
    out
}

/// The right answer of every query.
pub async fn reference() -> Result<Answers, String> {
    let ctx = SessionContext::new_with_config(ember_engine::session::planning_config(PARTITIONS));
    let mut answers = Vec::new();
    for query in QUERIES {
        let batches = ctx
            .sql(query)
            .await
            .map_err(|e| e.to_string())?
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        answers.push(lines(&batches));
    }
    Ok(Arc::new(answers))
}
