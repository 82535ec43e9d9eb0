//! Tables of a case: column types, values (NULLs, skew, duplicates, unicode,
//! extremes), how they are split into files, and their CSV text and DDL.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A column type, as declared in `CREATE EXTERNAL TABLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    Int,
    BigInt,
    Double,
    Decimal,
    Text,
    Bool,
    Date,
    Timestamp,
}

/// Types that compare and combine with each other without casts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Num,
    Text,
    Bool,
    Date,
    Time,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Num,
        Family::Text,
        Family::Bool,
        Family::Date,
        Family::Time,
    ];
}

impl SqlType {
    pub const ALL: [SqlType; 8] = [
        SqlType::Int,
        SqlType::BigInt,
        SqlType::Double,
        SqlType::Decimal,
        SqlType::Text,
        SqlType::Bool,
        SqlType::Date,
        SqlType::Timestamp,
    ];

    pub fn family(self) -> Family {
        match self {
            SqlType::Int | SqlType::BigInt | SqlType::Double | SqlType::Decimal => Family::Num,
            SqlType::Text => Family::Text,
            SqlType::Bool => Family::Bool,
            SqlType::Date => Family::Date,
            SqlType::Timestamp => Family::Time,
        }
    }

    /// The type's name in DDL.
    pub fn sql(self) -> &'static str {
        match self {
            SqlType::Int => "INT",
            SqlType::BigInt => "BIGINT",
            SqlType::Double => "DOUBLE",
            SqlType::Decimal => "DECIMAL(12,2)",
            SqlType::Text => "VARCHAR",
            SqlType::Bool => "BOOLEAN",
            SqlType::Date => "DATE",
            SqlType::Timestamp => "TIMESTAMP",
        }
    }
}

/// One cell. Doubles are kept to quarters and to magnitudes whose sums are
/// exact in any order, so aggregates do not depend on how rows are split.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Double(f64),
    /// Hundredths.
    Decimal(i64),
    Text(String),
    Bool(bool),
    /// Days since 1970-01-01.
    Date(i32),
    /// Seconds since 1970-01-01 00:00:00.
    Timestamp(i64),
}

impl Value {
    /// The cell as a CSV field (empty for NULL).
    pub fn csv(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Text(s) => format!("\"{}\"", s.replace('"', "\"\"")),
            other => other.plain(),
        }
    }

    /// The value as a SQL literal.
    pub fn sql(&self) -> String {
        match self {
            Value::Null => "NULL".to_string(),
            Value::Int(_) | Value::Bool(_) => self.plain(),
            Value::Double(d) if d.fract() == 0.0 => format!("{}.0", self.plain()),
            Value::Double(_) => self.plain(),
            Value::Decimal(_) => format!("CAST('{}' AS DECIMAL(12,2))", self.plain()),
            Value::Text(s) => format!("'{}'", s.replace('\'', "''")),
            Value::Date(_) => format!("DATE '{}'", self.plain()),
            Value::Timestamp(_) => format!("TIMESTAMP '{}'", self.plain().replace('T', " ")),
        }
    }

    fn plain(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Int(i) => i.to_string(),
            Value::Double(d) => d.to_string(),
            Value::Decimal(c) => {
                let sign = if *c < 0 { "-" } else { "" };
                let abs = c.unsigned_abs();
                format!("{sign}{}.{:02}", abs / 100, abs % 100)
            }
            Value::Text(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Date(days) => civil(i64::from(*days)),
            Value::Timestamp(secs) => {
                let days = secs.div_euclid(86_400);
                let rest = secs.rem_euclid(86_400);
                format!(
                    "{}T{:02}:{:02}:{:02}",
                    civil(days),
                    rest / 3600,
                    rest % 3600 / 60,
                    rest % 60
                )
            }
        }
    }
}

/// `YYYY-MM-DD` of a day count since 1970-01-01 (proleptic Gregorian).
fn civil(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// How a table's files are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    Parquet,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: SqlType,
}

/// A table and its rows, already split into the files it is stored in.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub name: String,
    pub columns: Vec<Column>,
    pub format: FileFormat,
    /// Rows of each file, in order; a file may hold none.
    pub files: Vec<Vec<Vec<Value>>>,
}

impl Table {
    pub fn rows(&self) -> usize {
        self.files.iter().map(Vec::len).sum()
    }

    /// A file's rows as CSV with a header line.
    pub fn csv(&self, file: usize) -> String {
        let mut out = self
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(",");
        out.push('\n');
        for row in self.files.get(file).map(Vec::as_slice).unwrap_or_default() {
            out.push_str(&row.iter().map(Value::csv).collect::<Vec<_>>().join(","));
            out.push('\n');
        }
        out
    }

    /// The column list of `CREATE EXTERNAL TABLE`.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| format!("{} {}", c.name, c.ty.sql()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `CREATE EXTERNAL TABLE` for the table's files under `location` (a
    /// directory, ending in `/`).
    pub fn ddl(&self, location: &str) -> String {
        match self.format {
            FileFormat::Csv => format!(
                "CREATE EXTERNAL TABLE {} ({}) STORED AS CSV LOCATION '{location}' OPTIONS ('format.has_header' 'true')",
                self.name,
                self.column_list()
            ),
            FileFormat::Parquet => format!(
                "CREATE EXTERNAL TABLE {} ({}) STORED AS PARQUET LOCATION '{location}'",
                self.name,
                self.column_list()
            ),
        }
    }
}

const TEXTS: &[&str] = &[
    "a", "b", "A", "ab", "abc", "é", "É", "日本", "🙂x", "a,b", "q\"t", "it's", " sp", "Zz", "ß",
    "0", "%_", "NULL",
];

/// Small domains so that joins, IN and GROUP BY find matches; extremes
/// rarely.
pub(crate) fn random_value(rng: &mut ChaCha8Rng, ty: SqlType) -> Value {
    let extreme = rng.random_bool(0.04);
    match ty {
        SqlType::Int if extreme => {
            Value::Int(*pick(rng, &[i64::from(i32::MAX), i64::from(i32::MIN)]))
        }
        SqlType::Int => Value::Int(rng.random_range(-2..9)),
        // Large enough to be extreme, small enough that no sum of a case's
        // rows overflows (which would depend on the order of additions).
        SqlType::BigInt if extreme => Value::Int(*pick(
            rng,
            &[100_000_000_000_000_000, -100_000_000_000_000_000],
        )),
        SqlType::BigInt => Value::Int(rng.random_range(-2..9)),
        SqlType::Double if extreme => Value::Double(*pick(rng, &[1e15, -1e15, 0.25])),
        SqlType::Double => Value::Double(f64::from(rng.random_range(-12..40_i32)) / 4.0),
        SqlType::Decimal if extreme => {
            Value::Decimal(*pick(rng, &[999_999_999_999, -999_999_999_999, 1]))
        }
        SqlType::Decimal => Value::Decimal(rng.random_range(-500..1500) / 25 * 25),
        SqlType::Text if rng.random_bool(0.15) => {
            let alphabet = ['a', 'b', 'Z', 'é', '日', '🙂', ' ', ',', 'x'];
            let len = rng.random_range(1..5);
            Value::Text((0..len).map(|_| *pick(rng, &alphabet)).collect())
        }
        SqlType::Text => Value::Text((*pick(rng, TEXTS)).to_string()),
        SqlType::Bool => Value::Bool(rng.random_bool(0.5)),
        // 2024-01-01 is day 19723.
        SqlType::Date if extreme => Value::Date(*pick(rng, &[0, -25_567, 47_481])),
        SqlType::Date => Value::Date(19_723 + rng.random_range(0..12)),
        SqlType::Timestamp if extreme => Value::Timestamp(*pick(rng, &[0, 4_102_444_799])),
        SqlType::Timestamp => Value::Timestamp(
            19_723 * 86_400 + rng.random_range(0..6) * 43_200 + rng.random_range(0..3),
        ),
    }
}

/// A random table `name` with `key_type` as its first column (the usual
/// join key) and a few more columns of any type.
pub(crate) fn random_table(rng: &mut ChaCha8Rng, name: &str, key_type: SqlType) -> Table {
    let mut columns = vec![Column {
        name: "k".to_string(),
        ty: key_type,
    }];
    for i in 0..rng.random_range(1..5) {
        let ty = *pick(rng, &SqlType::ALL);
        columns.push(Column {
            name: format!("c{i}"),
            ty,
        });
    }
    let rows = if rng.random_bool(0.1) {
        0
    } else {
        rng.random_range(1..40)
    };
    // Per column: how often NULL, and a hot value for skew.
    let shapes: Vec<(f64, Option<Value>)> = columns
        .iter()
        .map(|c| {
            let nulls = *pick(rng, &[0.0, 0.0, 0.1, 0.3]);
            let hot = rng.random_bool(0.3).then(|| random_value(rng, c.ty));
            (nulls, hot)
        })
        .collect();
    let mut data: Vec<Vec<Value>> = Vec::with_capacity(rows);
    for _ in 0..rows {
        if !data.is_empty() && rng.random_bool(0.1) {
            let copy = data[rng.random_range(0..data.len())].clone();
            data.push(copy);
            continue;
        }
        let row = columns
            .iter()
            .zip(&shapes)
            .map(|(c, (nulls, hot))| {
                if rng.random_bool(*nulls) {
                    Value::Null
                } else if let Some(hot) = hot.as_ref().filter(|_| rng.random_bool(0.5)) {
                    hot.clone()
                } else {
                    random_value(rng, c.ty)
                }
            })
            .collect();
        data.push(row);
    }
    let file_count = rng.random_range(1..5);
    let mut files: Vec<Vec<Vec<Value>>> = vec![Vec::new(); file_count];
    for row in data {
        files[rng.random_range(0..file_count)].push(row);
    }
    let format = if rng.random_bool(0.4) {
        FileFormat::Parquet
    } else {
        FileFormat::Csv
    };
    Table {
        name: name.to_string(),
        columns,
        format,
        files,
    }
}

/// One element of a non-empty slice, chosen by `rng`.
pub(crate) fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    debug_assert!(!items.is_empty(), "pick from an empty slice");
    &items[rng.random_range(0..items.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_timestamps_print_as_calendar_days() {
        assert_eq!(Value::Date(0).sql(), "DATE '1970-01-01'");
        assert_eq!(Value::Date(19_723).plain(), "2024-01-01");
        assert_eq!(Value::Date(-25_567).plain(), "1900-01-01");
        assert_eq!(Value::Date(47_481).plain(), "2099-12-31");
        assert_eq!(
            Value::Timestamp(19_723 * 86_400 + 3_723).plain(),
            "2024-01-01T01:02:03"
        );
    }

    #[test]
    fn cells_quote_and_escape() {
        assert_eq!(Value::Text("q\"t".into()).csv(), "\"q\"\"t\"");
        assert_eq!(Value::Text("it's".into()).sql(), "'it''s'");
        assert_eq!(Value::Decimal(-5).sql(), "CAST('-0.05' AS DECIMAL(12,2))");
        assert_eq!(Value::Double(2.0).sql(), "2.0");
        assert_eq!(Value::Null.csv(), "");
    }
}
