//! Writes the TPC-H tables as Parquet with `tpchgen`: each table split into
//! parts by the generators themselves (part k of N is the k-th slice of
//! the rows), the parts written in parallel, then `tables.sql` and the 22
//! query scripts.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use datafusion::arrow::record_batch::RecordBatchReader;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow,
    SupplierArrow,
};

use super::{QUERIES, Table, TpchError, io_err, query_script, tables_ddl};

/// What to generate, and where.
#[derive(Debug, Clone)]
pub struct TpchSpec {
    /// The scale factor: 1 is about 1 GB of data (6M lineitem rows).
    pub scale: f64,
    /// Files per table (nation and region always have one).
    pub files: usize,
    pub out: PathBuf,
    /// Replace the tables and queries already in `out`.
    pub force: bool,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The output directory, absolute.
    pub dir: PathBuf,
    pub rows: u64,
    pub files: usize,
}

/// About how many rows the tables have at `spec.scale`, for a progress bar.
pub fn expected_rows(scale: f64) -> u64 {
    let orders = OrderGenerator::calculate_row_count(scale, 1, 1);
    let rows = 25
        + 5
        + PartGenerator::calculate_row_count(scale, 1, 1)
        + SupplierGenerator::calculate_row_count(scale, 1, 1)
        // Four suppliers a part; the generator counts parts.
        + 4 * PartSuppGenerator::calculate_row_count(scale, 1, 1)
        + CustomerGenerator::calculate_row_count(scale, 1, 1)
        + orders
        // An order has 1 to 7 lines, 4 on average.
        + 4 * orders;
    u64::try_from(rows).unwrap_or(0)
}

/// Generates the tables under `spec.out` (`DIR/lineitem/part-0.parquet`,
/// ...), `DIR/tables.sql` and `DIR/queries/q01.sql` to `q22.sql`.
/// `on_rows` hears of every batch written, from the writer threads.
pub fn generate(spec: &TpchSpec, on_rows: &(dyn Fn(u64) + Sync)) -> Result<Generated, TpchError> {
    if !(spec.scale.is_finite() && spec.scale > 0.0) {
        return Err(TpchError::BadScale(spec.scale));
    }
    let parts = i32::try_from(spec.files)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or(TpchError::BadFiles(spec.files))?;
    fs::create_dir_all(&spec.out).map_err(io_err(&spec.out))?;
    let dir = fs::canonicalize(&spec.out).map_err(io_err(&spec.out))?;
    clear(&dir, spec.force)?;

    let work: Vec<(Table, i32)> = Table::ALL
        .iter()
        .flat_map(|&table| {
            let n = if table.splits() { parts } else { 1 };
            (1..=n).map(move |part| (table, part))
        })
        .collect();
    for table in Table::ALL {
        let path = dir.join(table.name());
        fs::create_dir_all(&path).map_err(io_err(&path))?;
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let threads = ember_session::master::available_cores()
        .min(work.len())
        .max(1);
    let written: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<u64, TpchError> {
                    let mut rows = 0;
                    // Largest parts first, taken one at a time, so the
                    // threads finish together.
                    while !failed.load(Ordering::Relaxed) {
                        let Some(&(table, part)) = work.get(next.fetch_add(1, Ordering::Relaxed))
                        else {
                            break;
                        };
                        let n = if table.splits() { parts } else { 1 };
                        let path = dir
                            .join(table.name())
                            .join(format!("part-{}.parquet", part - 1));
                        match write_part(table, spec.scale, part, n, &path, on_rows) {
                            Ok(r) => rows += r,
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                    Ok(rows)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(TpchError::WriterPanicked(dir.clone())))
            })
            .collect::<Result<Vec<u64>, TpchError>>()
    })?;

    write_scripts(&dir, spec.scale)?;
    Ok(Generated {
        dir,
        rows: written.iter().sum(),
        files: work.len(),
    })
}

/// Writes `dir/tables.sql` and `dir/queries/q01.sql` to `q22.sql` for the
/// tables generated under `dir` at `scale`.
pub fn write_scripts(dir: &Path, scale: f64) -> Result<(), TpchError> {
    let tables = dir.join("tables.sql");
    fs::write(&tables, tables_ddl(dir)).map_err(io_err(&tables))?;
    let queries = dir.join("queries");
    fs::create_dir_all(&queries).map_err(io_err(&queries))?;
    for n in QUERIES {
        let path = queries.join(format!("q{n:02}.sql"));
        fs::write(&path, query_script(n, scale, dir)?).map_err(io_err(&path))?;
    }
    Ok(())
}

/// Refuses a directory with anything in it, unless `force`: then removes
/// what an earlier run wrote (the table directories, `tables.sql`,
/// `queries/`) and leaves the rest.
fn clear(dir: &Path, force: bool) -> Result<(), TpchError> {
    let mut entries = fs::read_dir(dir).map_err(io_err(dir))?;
    if entries.next().is_none() {
        return Ok(());
    }
    if !force {
        return Err(TpchError::NotEmpty(dir.to_path_buf()));
    }
    for table in Table::ALL {
        remove(&dir.join(table.name()))?;
    }
    remove(&dir.join("queries"))?;
    remove(&dir.join("tables.sql"))
}

fn remove(path: &Path) -> Result<(), TpchError> {
    let removed = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    };
    removed.map_err(io_err(path))
}

/// Writes part `part` of `parts` of `table`; returns its rows.
fn write_part(
    table: Table,
    scale: f64,
    part: i32,
    parts: i32,
    path: &Path,
    on_rows: &(dyn Fn(u64) + Sync),
) -> Result<u64, TpchError> {
    match table {
        Table::LineItem => write_parquet(
            LineItemArrow::new(LineItemGenerator::new(scale, part, parts)),
            path,
            on_rows,
        ),
        Table::Orders => write_parquet(
            OrderArrow::new(OrderGenerator::new(scale, part, parts)),
            path,
            on_rows,
        ),
        Table::PartSupp => write_parquet(
            PartSuppArrow::new(PartSuppGenerator::new(scale, part, parts)),
            path,
            on_rows,
        ),
        Table::Part => write_parquet(
            PartArrow::new(PartGenerator::new(scale, part, parts)),
            path,
            on_rows,
        ),
        Table::Customer => write_parquet(
            CustomerArrow::new(CustomerGenerator::new(scale, part, parts)),
            path,
            on_rows,
        ),
        Table::Supplier => write_parquet(
            SupplierArrow::new(SupplierGenerator::new(scale, part, parts)),
            path,
            on_rows,
        ),
        Table::Nation => write_parquet(
            NationArrow::new(NationGenerator::new(scale, part, parts)),
            path,
            on_rows,
        ),
        Table::Region => write_parquet(
            RegionArrow::new(RegionGenerator::new(scale, part, parts)),
            path,
            on_rows,
        ),
    }
}

fn write_parquet(
    batches: impl RecordBatchReader,
    path: &Path,
    on_rows: &(dyn Fn(u64) + Sync),
) -> Result<u64, TpchError> {
    let parquet_err = |source| TpchError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let file = fs::File::create(path).map_err(io_err(path))?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer =
        ArrowWriter::try_new(file, batches.schema(), Some(properties)).map_err(parquet_err)?;
    let mut rows = 0;
    for batch in batches {
        let batch = batch.map_err(|e| parquet_err(e.into()))?;
        writer.write(&batch).map_err(parquet_err)?;
        let n = batch.num_rows() as u64;
        rows += n;
        on_rows(n);
    }
    writer.close().map_err(parquet_err)?;
    Ok(rows)
}

/// TPC-H at `scale` in `files` files a table under `root`: the tables
/// generated once and reused after, the scripts written anew each time so
/// they always match this build (for tests and benchmarks).
pub fn cached_tpch(root: &Path, scale: f64, files: usize) -> Result<PathBuf, TpchError> {
    let dir = root.join(format!("tpch-sf{scale}-{files}"));
    let done = dir.join("_COMPLETE");
    if !done.exists() {
        errln!(
            "generating TPC-H scale factor {scale} in {files} files a table under {} ...",
            dir.display()
        );
        generate(
            &TpchSpec {
                scale,
                files,
                out: dir.clone(),
                force: true,
            },
            &|_| {},
        )?;
        fs::write(&done, "").map_err(io_err(&done))?;
    }
    let dir = fs::canonicalize(&dir).map_err(io_err(&dir))?;
    write_scripts(&dir, scale)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_add_up_to_the_whole_table_and_a_full_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spec = |out: &str, files, force| TpchSpec {
            scale: 0.001,
            files,
            out: dir.path().join(out),
            force,
        };
        let one = generate(&spec("one", 1, false), &|_| {}).unwrap();
        let three = generate(&spec("three", 3, false), &|_| {}).unwrap();
        assert_eq!(one.rows, three.rows);
        let estimate = expected_rows(0.001) as f64;
        assert!(
            (estimate / one.rows as f64 - 1.0).abs() < 0.02,
            "{estimate} vs {one:?}"
        );
        assert_eq!(three.files, 6 * 3 + 2);
        let lineitem: Vec<_> = fs::read_dir(three.dir.join("lineitem")).unwrap().collect();
        assert_eq!(lineitem.len(), 3);
        assert_eq!(fs::read_dir(three.dir.join("nation")).unwrap().count(), 1);
        assert_eq!(fs::read_dir(three.dir.join("queries")).unwrap().count(), 22);

        let again = generate(&spec("three", 2, false), &|_| {});
        assert!(matches!(again, Err(TpchError::NotEmpty(_))), "{again:?}");
        let mine = three.dir.join("notes.txt");
        fs::write(&mine, "kept").unwrap();
        let two = generate(&spec("three", 2, true), &|_| {}).unwrap();
        assert_eq!(two.rows, one.rows);
        assert_eq!(fs::read_dir(two.dir.join("lineitem")).unwrap().count(), 2);
        assert_eq!(fs::read_to_string(&mine).unwrap(), "kept");

        let bad = |scale, files| TpchSpec {
            scale,
            files,
            out: dir.path().join("bad"),
            force: false,
        };
        assert!(matches!(
            generate(&bad(0.0, 1), &|_| {}),
            Err(TpchError::BadScale(_))
        ));
        assert!(matches!(
            generate(&bad(1.0, 0), &|_| {}),
            Err(TpchError::BadFiles(0))
        ));
    }
}
