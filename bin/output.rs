//! Printing a job's rows: an aligned table for people, CSV or JSON lines for
//! programs. Every format tells a NULL from an empty string.

use std::io::Write;

use comfy_table::{ColumnConstraint, ContentArrangement, Row, Table, Width};
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::writer::{EncoderOptions, NullableEncoder, make_encoder};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// How a table and CSV show a NULL.
const NULL: &str = "NULL";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        <Self as clap::ValueEnum>::from_str(s, true)
            .map_err(|_| format!("unknown format '{s}': use table, csv or json"))
    }
}

/// How much of a table fits: the terminal's width (cells are cut to one
/// line, ending in `…`) and a number of rows. Other formats print all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub width: Option<u16>,
    pub max_rows: Option<usize>,
}

impl Limits {
    /// The width of the terminal standard output is, if it is one.
    pub fn terminal(max_rows: Option<usize>) -> Self {
        let width = console::Term::stdout()
            .size_checked()
            .map(|(_, columns)| columns)
            // A pseudo-terminal nobody sized reports 0 columns.
            .filter(|&columns| columns >= 20);
        Self { width, max_rows }
    }
}

/// Whether writing failed because the reader went away (`| head`): then
/// there is nothing more to print, and nothing went wrong.
pub fn reader_gone(e: &ArrowError) -> bool {
    matches!(e, ArrowError::IoError(_, io) if io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// The line under a table on a terminal: how many rows, and how long the
/// query took.
pub fn footer(rows: usize, took: Option<std::time::Duration>) -> String {
    let plural = if rows == 1 { "" } else { "s" };
    match took {
        Some(took) => format!("{rows} row{plural} in {:.3} s", took.as_secs_f64()),
        None => format!("{rows} row{plural}"),
    }
}

/// Writes every row in `format`.
pub fn write_rows(
    out: &mut dyn Write,
    format: OutputFormat,
    rows: &ember_actors::JobOutput,
) -> Result<(), ArrowError> {
    write_batches(out, format, &rows.schema, &rows.batches, Limits::default()).map(|_| ())
}

/// Writes `batches` in `format`; a table keeps to `limits`. Returns how
/// many rows were written.
pub fn write_batches(
    out: &mut dyn Write,
    format: OutputFormat,
    schema: &Schema,
    batches: &[RecordBatch],
    limits: Limits,
) -> Result<usize, ArrowError> {
    write_part(out, format, schema, batches, limits, true)
}

/// Writes a job's rows in `format` as they are read, so that a result of
/// any size passes through a few batches of memory: CSV and JSON a batch
/// at a time; a table, which must see its rows to size its columns,
/// gathers the rows it shows (`limits.max_rows`, all without a limit).
/// Returns how many rows were written and how many the result has.
pub async fn write_stream(
    out: &mut dyn Write,
    format: OutputFormat,
    rows: &mut ember_actors::JobRows,
    limits: Limits,
) -> Result<(usize, u64), ember_session::SinkError<ArrowError>> {
    use ember_session::SinkError;
    let schema = std::sync::Arc::clone(rows.schema());
    if format == OutputFormat::Table {
        let mut kept = Vec::new();
        let mut taken = 0;
        while limits.max_rows.is_none_or(|max| taken < max) {
            let Some(batch) = rows.next().await else {
                break;
            };
            let batch = batch?;
            taken += batch.num_rows();
            kept.push(batch);
        }
        let shown = write_batches(out, format, &schema, &kept, limits).map_err(SinkError::Sink)?;
        return Ok((shown, rows.num_rows()));
    }
    let mut written = 0;
    let mut first = true;
    while let Some(batch) = rows.next().await {
        let batch = batch?;
        written +=
            write_part(out, format, &schema, &[batch], limits, first).map_err(SinkError::Sink)?;
        first = false;
    }
    if first {
        write_part(out, format, &schema, &[], limits, true).map_err(SinkError::Sink)?;
    }
    Ok((written, written as u64))
}

/// Writes `batches`, with CSV's header line when `first`.
fn write_part(
    out: &mut dyn Write,
    format: OutputFormat,
    schema: &Schema,
    batches: &[RecordBatch],
    limits: Limits,
    first: bool,
) -> Result<usize, ArrowError> {
    // Writers report I/O errors as text (the CSV one does); the pipe's
    // close is told apart here, where the error is still an io::Error.
    let mut watched = Watched {
        out,
        reader_gone: false,
    };
    write_to(&mut watched, format, schema, batches, limits, first).map_err(|e| {
        if watched.reader_gone {
            ArrowError::IoError(
                "the reader went away".into(),
                std::io::ErrorKind::BrokenPipe.into(),
            )
        } else {
            e
        }
    })
}

/// A writer that remembers whether its reader went away.
struct Watched<'a> {
    out: &'a mut dyn Write,
    reader_gone: bool,
}

impl Write for Watched<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.out.write(buf);
        self.reader_gone |= written
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe);
        written
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

fn write_to(
    out: &mut dyn Write,
    format: OutputFormat,
    schema: &Schema,
    batches: &[RecordBatch],
    limits: Limits,
    header: bool,
) -> Result<usize, ArrowError> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    match format {
        OutputFormat::Table => {
            let (table, shown) = table(schema, batches, limits)?;
            writeln!(out, "{table}")?;
            return Ok(shown);
        }
        OutputFormat::Csv => write_csv(out, schema, batches, header)?,
        OutputFormat::Json => {
            // Every row names every column, a NULL as null, so readers see
            // one shape of object.
            let mut writer = datafusion::arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
    }
    Ok(total)
}

/// CSV in which a NULL reads `NULL`, as in a table (and in Spark's and
/// Hive's shells), while a string that reads NULL is quoted (`"NULL"`) and
/// an empty string is `""`: a reader tells the three apart, and no row is
/// an empty line that readers would skip. A struct, list or map is its
/// JSON text. A column that cannot be written is refused before the header,
/// which comes first when `header` says so.
fn write_csv(
    out: &mut dyn Write,
    schema: &Schema,
    batches: &[RecordBatch],
    header: bool,
) -> Result<(), ArrowError> {
    // One write per line would be one system call per line on a terminal.
    let mut out = std::io::BufWriter::new(out);
    let text = FormatOptions::default();
    let json = EncoderOptions::default().with_explicit_nulls(true);
    let mut header = header.then(|| {
        schema
            .fields()
            .iter()
            .map(|f| csv_field(f.name()))
            .collect::<Vec<_>>()
            .join(",")
    });
    let mut line = String::new();
    for batch in batches {
        let batch_schema = batch.schema();
        let mut cells = batch_schema
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(field, column)| CsvColumn::new(field, column.as_ref(), &text, &json))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(header) = header.take() {
            writeln!(out, "{header}")?;
        }
        for row in 0..batch.num_rows() {
            line.clear();
            for (i, cell) in cells.iter_mut().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                cell.write(row, &mut line)?;
            }
            line.push('\n');
            out.write_all(line.as_bytes())?;
        }
    }
    if let Some(header) = header {
        writeln!(out, "{header}")?;
    }
    out.flush()?;
    Ok(())
}

/// One column's values as CSV fields.
struct CsvColumn<'a> {
    nulls: Option<NullBuffer>,
    values: CsvValues<'a>,
    text: String,
    json: Vec<u8>,
}

enum CsvValues<'a> {
    Text(ArrayFormatter<'a>),
    Json(NullableEncoder<'a>),
}

impl<'a> CsvColumn<'a> {
    fn new(
        field: &'a datafusion::arrow::datatypes::FieldRef,
        column: &'a dyn Array,
        text: &FormatOptions<'a>,
        json: &'a EncoderOptions,
    ) -> Result<Self, ArrowError> {
        let values = if field.data_type().is_nested() {
            let encoder = make_encoder(field, column, json).map_err(|e| {
                ArrowError::CsvError(format!(
                    "column {} ({}) cannot be written as CSV: {e}",
                    field.name(),
                    field.data_type()
                ))
            })?;
            CsvValues::Json(encoder)
        } else {
            CsvValues::Text(ArrayFormatter::try_new(column, text)?)
        };
        Ok(Self {
            nulls: column.logical_nulls(),
            values,
            text: String::new(),
            json: Vec::new(),
        })
    }

    /// Appends row `row`'s field to `line`.
    fn write(&mut self, row: usize, line: &mut String) -> Result<(), ArrowError> {
        if self.nulls.as_ref().is_some_and(|n| n.is_null(row)) {
            line.push_str(NULL);
            return Ok(());
        }
        self.text.clear();
        match &mut self.values {
            CsvValues::Text(formatter) => formatter.value(row).write(&mut self.text)?,
            CsvValues::Json(encoder) => {
                self.json.clear();
                encoder.encode(row, &mut self.json);
                self.text.push_str(&String::from_utf8_lossy(&self.json));
            }
        }
        line.push_str(&csv_field(&self.text));
        Ok(())
    }
}

/// `value` as a CSV field: quoted when it could be read as something else
/// (empty, `NULL`) or holds a comma, a quote or a line break.
fn csv_field(value: &str) -> std::borrow::Cow<'_, str> {
    if value.is_empty() || value == NULL || value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\"")).into()
    } else {
        value.into()
    }
}

/// An aligned table of at most `limits.max_rows` rows; with a width, each
/// row takes one line and, when the table is wider, the widest columns are
/// cut first.
fn table(
    schema: &Schema,
    batches: &[RecordBatch],
    limits: Limits,
) -> Result<(Table, usize), ArrowError> {
    let header: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let options = FormatOptions::default()
        .with_display_error(true)
        .with_null(NULL);
    let mut rows: Vec<Vec<String>> = Vec::new();
    'batches: for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|column| ArrayFormatter::try_new(column.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            if limits.max_rows.is_some_and(|max| rows.len() >= max) {
                break 'batches;
            }
            rows.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    let mut table = Table::new();
    table.load_preset("||--+-++|    ++++++");
    let shown = rows.len();
    let Some(width) = limits.width else {
        table.set_header(header);
        table.add_rows(rows);
        return Ok((table, shown));
    };
    let natural: Vec<usize> = (0..header.len())
        .map(|c| {
            std::iter::once(&header[c])
                .chain(rows.iter().map(|r| &r[c]))
                .map(|cell| console::measure_text_width(cell))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let one_line = |cells: Vec<String>| {
        let mut row = Row::from(cells);
        row.max_height(1);
        row
    };
    table.set_header(one_line(header));
    for row in rows {
        table.add_row(one_line(row));
    }
    table
        .set_width(width)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_truncation_indicator("…");
    let widths = fit(&natural, usize::from(width));
    if widths != natural {
        let constraints = widths.iter().map(|&w| {
            // Each column's width counts its padding.
            let w = u16::try_from(w + 2).unwrap_or(u16::MAX);
            ColumnConstraint::Absolute(Width::Fixed(w))
        });
        table.set_constraints(constraints);
    }
    Ok((table, shown))
}

/// The narrowest a cut column gets.
const MIN_COLUMN: usize = 3;

/// Content widths for columns `natural` wide in a table `total` wide:
/// narrow columns keep their width, the widest share what is left.
fn fit(natural: &[usize], total: usize) -> Vec<usize> {
    // Each column takes two spaces and a bar besides its content, and the
    // table one more bar.
    let mut available = total.saturating_sub(3 * natural.len() + 1);
    let mut order: Vec<usize> = (0..natural.len()).collect();
    order.sort_by_key(|&c| natural[c]);
    let mut widths = vec![0; natural.len()];
    for (placed, c) in order.into_iter().enumerate() {
        let share = available / (natural.len() - placed);
        widths[c] = natural[c].min(share.max(MIN_COLUMN));
        available = available.saturating_sub(widths[c]);
    }
    widths
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, ListArray, StringArray, StructArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type};

    use super::*;

    fn batch() -> (Schema, RecordBatch) {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("text", DataType::Utf8, false),
        ]);
        let long = "a very long value that goes on and on well past any narrow terminal";
        let batch = RecordBatch::try_new(
            Arc::new(schema.clone()),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec!["short", long, "x"])),
            ],
        )
        .unwrap();
        (schema, batch)
    }

    fn render(limits: Limits) -> (String, usize) {
        let (schema, batch) = batch();
        let mut out = Vec::new();
        let shown =
            write_batches(&mut out, OutputFormat::Table, &schema, &[batch], limits).unwrap();
        (String::from_utf8(out).unwrap(), shown)
    }

    #[test]
    fn a_table_fits_the_width_cutting_long_cells() {
        let (text, shown) = render(Limits {
            width: Some(40),
            max_rows: None,
        });
        assert_eq!(shown, 3);
        for line in text.lines() {
            assert!(line.chars().count() <= 40, "too wide: {line:?}");
        }
        assert!(text.contains('…'), "the cut cell says so:\n{text}");
        assert!(
            text.contains("| short "),
            "narrow cells stay whole:\n{text}"
        );
        assert!(text.contains("| id |"), "{text}");
        // Header, rule, three one-line rows and the borders.
        assert_eq!(text.lines().count(), 7, "{text}");
    }

    #[test]
    fn narrow_columns_keep_their_width_and_the_widest_are_cut() {
        // 4 columns: 13 characters of borders and padding.
        assert_eq!(fit(&[19, 5, 60, 7], 100), vec![19, 5, 56, 7]);
        assert_eq!(fit(&[19, 5, 60, 7], 60), vec![17, 5, 18, 7]);
        assert_eq!(fit(&[30, 40], 40), vec![16, 17]);
        assert_eq!(fit(&[2, 2], 80), vec![2, 2]);
        // Too narrow for anything: every column keeps a few characters.
        assert_eq!(fit(&[10, 10, 10], 10), vec![3, 3, 3]);
    }

    #[test]
    fn without_limits_a_table_shows_everything() {
        let (text, shown) = render(Limits::default());
        assert_eq!(shown, 3);
        assert!(text.contains("well past any narrow terminal"));
    }

    #[test]
    fn a_table_stops_at_its_row_limit() {
        let (text, shown) = render(Limits {
            width: None,
            max_rows: Some(2),
        });
        assert_eq!(shown, 2);
        assert!(!text.contains("| 3 "), "{text}");
    }

    /// A reader that has gone away.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_reader_is_told_apart_in_every_format() {
        let (schema, batch) = batch();
        for format in [OutputFormat::Table, OutputFormat::Csv, OutputFormat::Json] {
            let err = write_batches(
                &mut Closed,
                format,
                &schema,
                std::slice::from_ref(&batch),
                Limits::default(),
            )
            .unwrap_err();
            assert!(reader_gone(&err), "{format:?}: {err}");
        }
    }

    #[test]
    fn json_rows_name_every_column_even_when_null() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("title", DataType::Utf8, true),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema.clone()),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a"), None])),
            ],
        )
        .unwrap();
        let mut out = Vec::new();
        write_batches(
            &mut out,
            OutputFormat::Json,
            &schema,
            &[batch],
            Limits::default(),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"id\":1,\"title\":\"a\"}\n{\"id\":2,\"title\":null}\n"
        );
    }

    fn print(format: OutputFormat, schema: &Schema, batch: RecordBatch) -> String {
        let mut out = Vec::new();
        write_batches(&mut out, format, schema, &[batch], Limits::default()).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// A table's lines of cells, header first, trimmed.
    fn cells(table: &str) -> Vec<Vec<&str>> {
        table
            .lines()
            .filter(|l| l.starts_with('|'))
            .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
            .collect()
    }

    #[test]
    fn a_null_and_an_empty_string_print_differently_in_every_format() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("word", DataType::Utf8, true),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema.clone()),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), Some(2), None, Some(4)])),
                Arc::new(StringArray::from(vec![
                    Some("a,b"),
                    Some(""),
                    None,
                    Some("NULL"),
                ])),
            ],
        )
        .unwrap();
        assert_eq!(
            print(OutputFormat::Csv, &schema, batch.clone()),
            "id,word\n1,\"a,b\"\n2,\"\"\nNULL,NULL\n4,\"NULL\"\n"
        );
        let table = print(OutputFormat::Table, &schema, batch.clone());
        assert_eq!(
            cells(&table),
            vec![
                vec!["id", "word"],
                vec!["1", "a,b"],
                vec!["2", ""],
                vec!["NULL", "NULL"],
                vec!["4", "NULL"]
            ],
            "{table}"
        );
        assert_eq!(
            print(OutputFormat::Json, &schema, batch),
            "{\"id\":1,\"word\":\"a,b\"}\n{\"id\":2,\"word\":\"\"}\n\
             {\"id\":null,\"word\":null}\n{\"id\":4,\"word\":\"NULL\"}\n"
        );
    }

    #[test]
    fn no_csv_row_is_an_empty_line_that_readers_would_skip() {
        let schema = Schema::new(vec![Field::new("top", DataType::Int64, true)]);
        let batch = RecordBatch::try_new(
            Arc::new(schema.clone()),
            vec![Arc::new(Int64Array::from(vec![None]))],
        )
        .unwrap();
        assert_eq!(print(OutputFormat::Csv, &schema, batch), "top\nNULL\n");
    }

    #[test]
    fn nested_values_are_json_text_in_csv() {
        let point = StructArray::from(vec![
            (
                Arc::new(Field::new("a", DataType::Int64, true)),
                Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
            ),
            (
                Arc::new(Field::new("b", DataType::Utf8, true)),
                Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef,
            ),
        ]);
        let list = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
        ]);
        let schema = Schema::new(vec![
            Field::new("s", point.data_type().clone(), true),
            Field::new("l", list.data_type().clone(), true),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema.clone()),
            vec![Arc::new(point), Arc::new(list)],
        )
        .unwrap();
        assert_eq!(
            print(OutputFormat::Csv, &schema, batch.clone()),
            "s,l\n\"{\"\"a\"\":1,\"\"b\"\":\"\"x\"\"}\",\"[1,2]\"\n\"{\"\"a\"\":null,\"\"b\"\":\"\"y\"\"}\",NULL\n"
        );
        let table = print(OutputFormat::Table, &schema, batch);
        assert_eq!(
            cells(&table),
            vec![
                vec!["s", "l"],
                vec!["{a: 1, b: x}", "[1, 2]"],
                vec!["{a: NULL, b: y}", "NULL"]
            ],
            "{table}"
        );
    }

    #[test]
    fn formats_parse_by_name() {
        assert_eq!("CSV".parse::<OutputFormat>(), Ok(OutputFormat::Csv));
        let err = "xml".parse::<OutputFormat>().unwrap_err();
        assert!(err.contains("table, csv or json"), "{err}");
    }
}
