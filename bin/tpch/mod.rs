//! TPC-H for Ember: the eight tables as Parquet (`ember gen tpch`), the DDL
//! that registers them, and the 22 queries with the specification's
//! validation parameters filled into the `tpchgen` crate's qgen templates.

mod answer;
mod generate;

use std::path::{Path, PathBuf};

pub use answer::{Answer, Cell, datafusion_answer};
pub use generate::{Generated, TpchSpec, cached_tpch, expected_rows, generate, write_scripts};

/// The queries' numbers.
pub const QUERIES: std::ops::RangeInclusive<u32> = 1..=22;

/// The eight TPC-H tables, largest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    LineItem,
    Orders,
    PartSupp,
    Part,
    Customer,
    Supplier,
    Nation,
    Region,
}

impl Table {
    pub const ALL: [Table; 8] = [
        Table::LineItem,
        Table::Orders,
        Table::PartSupp,
        Table::Part,
        Table::Customer,
        Table::Supplier,
        Table::Nation,
        Table::Region,
    ];

    /// The table's SQL name, also its directory's.
    pub fn name(self) -> &'static str {
        match self {
            Table::LineItem => "lineitem",
            Table::Orders => "orders",
            Table::PartSupp => "partsupp",
            Table::Part => "part",
            Table::Customer => "customer",
            Table::Supplier => "supplier",
            Table::Nation => "nation",
            Table::Region => "region",
        }
    }

    /// Nation and region have fixed rows that `tpchgen` does not split
    /// into parts: they get one file whatever `--files` says.
    pub fn splits(self) -> bool {
        !matches!(self, Table::Nation | Table::Region)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TpchError {
    #[error("--scale must be a positive number, like 1 or 0.1, not {0}")]
    BadScale(f64),
    #[error("--files must be between 1 and {max}, not {0}", max = i32::MAX)]
    BadFiles(usize),
    #[error(
        "{0} is not empty; pass --force to replace the TPC-H tables and queries in it, or choose another --out"
    )]
    NotEmpty(PathBuf),
    #[error("there is no TPC-H query {0}; the queries are numbered 1 to 22")]
    NoSuchQuery(u32),
    #[error("TPC-H query {query}: the template's placeholder {placeholder} has no parameter")]
    Placeholder { query: u32, placeholder: String },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Parquet {
        path: PathBuf,
        source: datafusion::parquet::errors::ParquetError,
    },
    #[error("a table writer thread panicked; {0} may be incomplete: run again with --force")]
    WriterPanicked(PathBuf),
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("{0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TpchError + '_ {
    move |source| TpchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `CREATE EXTERNAL TABLE` statements (each ending in `;`) registering the
/// tables generated under `dir`; give an absolute `dir` for scripts that
/// may run elsewhere (cluster mode).
pub fn tables_ddl(dir: &Path) -> String {
    Table::ALL
        .iter()
        .map(|table| {
            let location = dir.join(table.name());
            format!(
                "CREATE EXTERNAL TABLE {} STORED AS PARQUET LOCATION '{}/';\n",
                table.name(),
                location.display().to_string().replace('\'', "''")
            )
        })
        .collect()
}

/// Query `n` (1 to 22) with the specification's validation parameters
/// (TPC-H 2.x, clause 2.4.n.4) for scale factor `scale`, in DataFusion's
/// SQL. Statements end in `;`; query 15 is three (create view, select,
/// drop view).
pub fn query(n: u32, scale: f64) -> Result<String, TpchError> {
    let template = i32::try_from(n)
        .ok()
        .and_then(tpchgen::q_and_a::queries::query)
        .ok_or(TpchError::NoSuchQuery(n))?;
    let parameters = parameters(n, scale);
    let sql = substitute(template, &parameters, STREAM).map_err(|placeholder| {
        TpchError::Placeholder {
            query: n,
            placeholder,
        }
    })?;
    Ok(format!("{}\n", adapt(n, &sql).trim()))
}

/// A whole runnable script: the tables' DDL, then query `n`.
pub fn query_script(n: u32, scale: f64, dir: &Path) -> Result<String, TpchError> {
    Ok(format!(
        "-- TPC-H query {n}, validation parameters for scale factor {scale}\n{}\n{}",
        tables_ddl(dir),
        query(n, scale)?
    ))
}

/// The stream number qgen writes for `:s` (Q15's view is `revenue0`).
const STREAM: &str = "0";

/// The validation parameters of query `n`, in the order of the template's
/// placeholders `:1`, `:2`, ...
fn parameters(n: u32, scale: f64) -> Vec<String> {
    let fixed: &[&str] = match n {
        1 => &["90"],
        2 => &["15", "BRASS", "EUROPE"],
        3 => &["BUILDING", "1995-03-15"],
        4 => &["1993-07-01"],
        5 => &["ASIA", "1994-01-01"],
        6 => &["1994-01-01", "0.06", "24"],
        7 => &["FRANCE", "GERMANY"],
        8 => &["BRAZIL", "AMERICA", "ECONOMY ANODIZED STEEL"],
        9 => &["green"],
        10 => &["1993-10-01"],
        // The fraction depends on the scale factor: pushed below.
        11 => &["GERMANY"],
        12 => &["MAIL", "SHIP", "1994-01-01"],
        13 => &["special", "requests"],
        14 => &["1995-09-01"],
        15 => &["1996-01-01"],
        16 => &[
            "Brand#45",
            "MEDIUM POLISHED",
            "49",
            "14",
            "23",
            "45",
            "19",
            "3",
            "36",
            "9",
        ],
        17 => &["Brand#23", "MED BOX"],
        18 => &["300"],
        // Brands :1-:3, then the quantities :4-:6.
        19 => &["Brand#12", "Brand#23", "Brand#34", "1", "10", "20"],
        20 => &["forest", "1994-01-01", "CANADA"],
        21 => &["SAUDI ARABIA"],
        22 => &["13", "31", "23", "29", "30", "18", "17"],
        _ => &[],
    };
    let mut parameters: Vec<String> = fixed.iter().map(|p| p.to_string()).collect();
    if n == 11 {
        parameters.push(fraction(scale));
    }
    parameters
}

/// Q11's FRACTION, 0.0001 / SF, as a short decimal literal.
fn fraction(scale: f64) -> String {
    let text = format!("{:.12}", 0.0001 / scale);
    let text = text.trim_end_matches('0');
    text.strip_suffix('.').unwrap_or(text).to_string()
}

/// Replaces qgen's `:N` placeholders with `parameters[N - 1]` and `:s`
/// (after a name) with the stream number; returns a placeholder without
/// a parameter as the error.
fn substitute(template: &str, parameters: &[String], stream: &str) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(at) = rest.find(':') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 {
            let placeholder = &rest[at..at + 1 + digits];
            let value = after[..digits]
                .parse::<usize>()
                .ok()
                .and_then(|k| k.checked_sub(1))
                .and_then(|i| parameters.get(i))
                .ok_or_else(|| placeholder.to_string())?;
            out.push_str(value);
            rest = &after[digits..];
        } else if after.starts_with('s')
            && !after[1..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
            && out.ends_with(|c: char| c.is_alphanumeric())
        {
            out.push_str(stream);
            rest = &after[1..];
        } else {
            out.push(':');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The few changes DataFusion's SQL needs, and the row counts the
/// specification sets (qgen's `:n`, which the templates leave out).
fn adapt(n: u32, sql: &str) -> String {
    let limit = match n {
        2 | 18 | 21 => Some(100),
        3 => Some(10),
        10 => Some(20),
        _ => None,
    };
    let sql = match n {
        // `interval '90' day (3)`: the precision of a day interval is not
        // in DataFusion's grammar.
        1 => sql.replace("day (3)", "day"),
        _ => sql.to_string(),
    };
    match limit {
        Some(rows) => {
            let body = sql.trim_end();
            let body = body.strip_suffix(';').unwrap_or(body);
            format!("{body}\nlimit {rows};")
        }
        None => sql,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    #[test]
    fn every_query_has_its_parameters_and_parses() {
        for n in QUERIES {
            let sql = query(n, 1.0).unwrap();
            let placeholder = sql.match_indices(':').find(|(at, _)| {
                sql[at + 1..].starts_with(|c: char| c.is_ascii_digit() || c == 's')
            });
            assert!(placeholder.is_none(), "Q{n} keeps a placeholder:\n{sql}");
            let statements = DFParser::parse_sql(&sql)
                .unwrap_or_else(|e| panic!("Q{n} does not parse: {e}\n{sql}"));
            let expected = if n == 15 { 3 } else { 1 };
            assert_eq!(statements.len(), expected, "Q{n}");
        }
    }

    #[test]
    fn parameters_land_where_the_specification_puts_them() {
        let q = |n| query(n, 1.0).unwrap();
        assert!(q(1).contains("interval '90' day\n"), "{}", q(1));
        assert!(q(2).contains("p_size = 15") && q(2).contains("like '%BRASS'"));
        assert!(q(6).contains("between 0.06 - 0.01 and 0.06 + 0.01"));
        assert!(q(6).contains("l_quantity < 24;"));
        assert!(q(13).contains("not like '%special%requests%'"));
        assert!(q(15).contains("create view revenue0 ("));
        assert!(q(15).contains("drop view revenue0;"));
        assert!(q(16).contains("in (49, 14, 23, 45, 19, 3, 36, 9)"));
        assert!(q(19).contains("p_brand = 'Brand#12'"));
        assert!(q(19).contains("l_quantity >= 1 and l_quantity <= 1 + 10"));
        assert!(q(19).contains("l_quantity >= 20 and l_quantity <= 20 + 10"));
        assert!(q(3).ends_with("o_orderdate\nlimit 10;\n"), "{}", q(3));
        assert!(q(22).contains("('13', '31', '23', '29', '30', '18', '17')"));
        assert!(q(11).contains("* 0.0001\n"));
        assert!(query(11, 0.01).unwrap().contains("* 0.01\n"));
        assert!(query(11, 0.1).unwrap().contains("* 0.001\n"));
    }

    #[test]
    fn unknown_queries_and_placeholders_are_errors() {
        assert!(matches!(query(0, 1.0), Err(TpchError::NoSuchQuery(0))));
        assert!(matches!(query(23, 1.0), Err(TpchError::NoSuchQuery(23))));
        assert_eq!(
            substitute("a = :2", &["x".to_string()], "0"),
            Err(":2".to_string())
        );
        // `:1` is not the start of `:10`; a lone colon stays.
        let ten: Vec<String> = (1..=10).map(|i| format!("p{i}")).collect();
        assert_eq!(
            substitute(":1, :10, a::int, revenue:s", &ten, "7").unwrap(),
            "p1, p10, a::int, revenue7"
        );
    }

    #[test]
    fn scripts_register_every_table_from_an_absolute_dir() {
        let ddl = tables_ddl(Path::new("/data/tpch"));
        for table in Table::ALL {
            assert!(ddl.contains(&format!(
                "CREATE EXTERNAL TABLE {} STORED AS PARQUET LOCATION '/data/tpch/{}/';",
                table.name(),
                table.name()
            )));
        }
        let script = query_script(5, 1.0, Path::new("/data/tpch")).unwrap();
        assert_eq!(DFParser::parse_sql(&script).unwrap().len(), 9);
    }
}
