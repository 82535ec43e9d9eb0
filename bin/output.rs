//! Printing a job's rows: an aligned table for people, CSV or JSON lines for
//! programs.

use std::io::Write;

use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::pretty::pretty_format_batches_with_schema;
use ember_actors::JobOutput;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

pub fn write_rows(
    out: &mut dyn Write,
    format: OutputFormat,
    rows: &JobOutput,
) -> Result<(), ArrowError> {
    match format {
        OutputFormat::Table => {
            let table = pretty_format_batches_with_schema(rows.schema.clone(), &rows.batches)?;
            writeln!(out, "{table}")?;
        }
        OutputFormat::Csv => {
            if rows.num_rows() == 0 {
                let names: Vec<&str> = rows
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect();
                writeln!(out, "{}", names.join(","))?;
                return Ok(());
            }
            let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            for batch in &rows.batches {
                writer.write(batch)?;
            }
        }
        OutputFormat::Json => {
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut *out);
            for batch in &rows.batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
    }
    Ok(())
}
