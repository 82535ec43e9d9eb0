//! How many rows a batch of a file source read, for its progress (Spark's
//! `numInputRows`).
//!
//! The batch's job reads the files in tasks, which report no row counts,
//! so the driver counts them itself, as cheaply as each format allows:
//! CSV records and JSON lines by one pass over the bytes (a newline inside
//! a quoted CSV field does not end a record; a header line and comment
//! lines are not rows), Parquet files from their footers, compressed CSV
//! and JSON by DataFusion's `count(*)` over the bound source (which, with
//! a watermark, leaves out the late rows).

use datafusion::logical_expr::CreateExternalTable;

/// A value of `create`'s options, by key in any case, with or without
/// its `format.` prefix.
fn option<'a>(create: &'a CreateExternalTable, key: &str) -> Option<&'a str> {
    create
        .options
        .iter()
        .find(|(k, _)| super::names_option(k, key))
        .map(|(_, v)| v.as_str())
}

/// How to count a source's files here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counting {
    /// One pass over the text.
    Text(Text),
    /// Parquet: the row count in the footer.
    Parquet,
}

/// Text files counted in one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Text {
    /// CSV: records end at newlines outside quotes.
    Csv {
        header: bool,
        quote: u8,
        comment: Option<u8>,
    },
    /// JSON lines: every line that is not blank.
    JsonLines,
}

/// How to count `create`'s files here; `None` when DataFusion must count
/// (compressed files). `header_default` is the
/// session's `datafusion.catalog.has_header`.
pub(crate) fn counting(create: &CreateExternalTable, header_default: bool) -> Option<Counting> {
    let compressed = option(create, "compression")
        .is_some_and(|c| !c.is_empty() && !c.eq_ignore_ascii_case("uncompressed"));
    if compressed {
        return None;
    }
    let byte = |key: &str| option(create, key).and_then(|v| v.bytes().next());
    match create.file_type.to_ascii_uppercase().as_str() {
        "CSV" => Some(Counting::Text(Text::Csv {
            header: option(create, "has_header")
                .map_or(header_default, |v| v.eq_ignore_ascii_case("true")),
            quote: byte("quote").unwrap_or(b'"'),
            comment: byte("comment"),
        })),
        "JSON" | "NDJSON" => Some(Counting::Text(Text::JsonLines)),
        "PARQUET" => Some(Counting::Parquet),
        _ => None,
    }
}

/// The rows in the file at `path` (a location, `file://` or not); `None`
/// when it cannot be read.
pub(crate) fn count_file(counting: Counting, path: &str) -> Option<u64> {
    let path = path.strip_prefix("file://").unwrap_or(path);
    match counting {
        Counting::Parquet => {
            use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
            let reader = SerializedFileReader::new(std::fs::File::open(path).ok()?).ok()?;
            u64::try_from(reader.metadata().file_metadata().num_rows()).ok()
        }
        Counting::Text(text) => std::fs::read(path).ok().map(|bytes| count(text, &bytes)),
    }
}

/// The rows in `bytes`, one CSV or JSON file's content.
pub(crate) fn count(text: Text, bytes: &[u8]) -> u64 {
    match text {
        Text::JsonLines => bytes
            .split(|b| *b == b'\n')
            .filter(|line| line.iter().any(|b| !b.is_ascii_whitespace()))
            .count() as u64,
        Text::Csv {
            header,
            quote,
            comment,
        } => {
            let mut records = 0u64;
            let mut quoted = false;
            // What the record being read holds so far: nothing, a comment,
            // or content.
            let mut start = true;
            let mut is_comment = false;
            let mut content = false;
            for &b in bytes {
                if start {
                    start = false;
                    is_comment = comment == Some(b);
                }
                if b == quote {
                    quoted = !quoted;
                }
                if b == b'\n' && !quoted {
                    if content && !is_comment {
                        records += 1;
                    }
                    start = true;
                    content = false;
                    continue;
                }
                if b != b'\r' {
                    content = true;
                }
            }
            if content && !is_comment {
                records += 1;
            }
            if header {
                records.saturating_sub(1)
            } else {
                records
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: Text = Text::Csv {
        header: true,
        quote: b'"',
        comment: None,
    };

    #[test]
    fn csv_records_are_counted_without_the_header_and_with_quoted_newlines() {
        assert_eq!(count(CSV, b"a,b\n1,2\n3,4\n"), 2);
        // No newline at the end, CRLF, a blank last line.
        assert_eq!(count(CSV, b"a,b\r\n1,2\r\n3,4"), 2);
        assert_eq!(count(CSV, b"a,b\n1,2\n\n"), 1);
        // A quoted field spanning lines, and an escaped quote.
        assert_eq!(count(CSV, b"a,b\n1,\"x\ny\"\n2,\"say \"\"hi\"\"\"\n"), 2);
        assert_eq!(count(CSV, b"a,b\n"), 0);
        assert_eq!(count(CSV, b""), 0);
        let no_header = Text::Csv {
            header: false,
            quote: b'"',
            comment: Some(b'#'),
        };
        assert_eq!(count(no_header, b"# note\n1,2\n3,4\n"), 2);
    }

    #[test]
    fn json_lines_are_the_lines_that_are_not_blank() {
        assert_eq!(count(Text::JsonLines, b"{\"a\":1}\n\n{\"a\":2}\n  \n"), 2);
        assert_eq!(count(Text::JsonLines, b"{\"a\":1}"), 1);
    }
}
