//! The shell's backslash commands.

use crate::output::OutputFormat;

/// A backslash command, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Quit,
    /// `\timing [on|off]`: without an argument, toggles.
    Timing(Option<bool>),
    /// `\format [table|csv|json]`: without an argument, shows the format.
    Format(Option<OutputFormat>),
    /// `\maxrows [N|all]`: how many rows a table shows.
    MaxRows(Option<Option<usize>>),
    Tables,
    Describe(String),
    Explain(String),
    Executors,
    /// `\streams`: the session's streaming queries and their last batch.
    Streams,
}

/// Every command: its names, arguments and what it does, for `\help` and
/// completion.
pub const COMMANDS: &[(&[&str], &str, &str)] = &[
    (&["\\help", "\\h", "\\?"], "", "this help"),
    (
        &["\\quit", "\\q"],
        "",
        "end the application and leave (also Ctrl-D, quit, exit)",
    ),
    (&["\\tables", "\\dt"], "", "list tables"),
    (
        &["\\describe", "\\d"],
        "TABLE",
        "a table's columns and types",
    ),
    (
        &["\\explain"],
        "SQL",
        "the stages a query would run, without running it",
    ),
    (
        &["\\executors"],
        "",
        "this application's executors: host, cores, state, tasks, memory and spill",
    ),
    (
        &["\\streams"],
        "",
        "streaming queries: state, batches, rows, rate, watermark (SHOW STREAMING QUERIES)",
    ),
    (
        &["\\timing"],
        "[on|off]",
        "print how long each statement took (on at a terminal)",
    ),
    (&["\\format"], "[table|csv|json]", "how results are printed"),
    (
        &["\\maxrows"],
        "[N|all]",
        "how many rows a table shows (default 1000)",
    ),
];

/// Parses one backslash command line.
pub fn parse(line: &str) -> Result<Command, String> {
    let line = line.trim();
    let (name, rest) = line
        .split_once(char::is_whitespace)
        .map_or((line, ""), |(n, r)| (n, r.trim()));
    let argument = rest.trim_end_matches(';').trim();
    let no_argument = |command: Command| {
        if argument.is_empty() {
            Ok(command)
        } else {
            Err(format!("{name} takes no argument"))
        }
    };
    match name {
        "\\help" | "\\h" | "\\?" => Ok(Command::Help),
        "\\quit" | "\\q" => no_argument(Command::Quit),
        "\\tables" | "\\dt" => no_argument(Command::Tables),
        "\\executors" => no_argument(Command::Executors),
        "\\streams" => no_argument(Command::Streams),
        "\\describe" | "\\d" if argument.is_empty() => Err(format!(
            "{name} needs a table: {name} TABLE (\\tables lists them)"
        )),
        "\\describe" | "\\d" => Ok(Command::Describe(argument.to_string())),
        "\\explain" if argument.is_empty() => {
            Err("\\explain needs a query: \\explain SELECT ...".into())
        }
        "\\explain" => Ok(Command::Explain(argument.to_string())),
        "\\timing" => match argument.to_ascii_lowercase().as_str() {
            "" => Ok(Command::Timing(None)),
            "on" => Ok(Command::Timing(Some(true))),
            "off" => Ok(Command::Timing(Some(false))),
            other => Err(format!("\\timing takes on or off, not '{other}'")),
        },
        "\\format" if argument.is_empty() => Ok(Command::Format(None)),
        "\\format" => argument.parse().map(|f| Command::Format(Some(f))),
        "\\maxrows" => match argument {
            "" => Ok(Command::MaxRows(None)),
            "all" => Ok(Command::MaxRows(Some(None))),
            n => match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Command::MaxRows(Some(Some(n)))),
                _ => Err(format!(
                    "\\maxrows takes a number of rows or all, not '{n}'"
                )),
            },
        },
        _ => Err(format!("unknown command {name}; \\help lists the commands")),
    }
}

/// The text `\help` prints.
pub fn help() -> String {
    let mut text = String::from(
        "SQL statements end with ';' and may span lines; Tab completes keywords, tables and columns.\n\
         Ctrl-C cancels the running query (or the statement being typed); Ctrl-D leaves.\n\n",
    );
    for (names, args, what) in COMMANDS {
        let usage = format!("{} {args}", names.join(", "));
        text.push_str(&format!("  {:<30} {what}\n", usage.trim_end()));
    }
    text.push_str(
        "\nSQL: CREATE EXTERNAL TABLE t STORED AS CSV LOCATION 'dir/' OPTIONS ('format.has_header' 'true');\n     \
         SELECT ...; COPY (SELECT ...) TO 'out/' STORED AS PARQUET; EXPLAIN SELECT ...; SET key = value;",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_with_their_arguments() {
        assert_eq!(parse("\\q"), Ok(Command::Quit));
        assert_eq!(parse("\\timing on"), Ok(Command::Timing(Some(true))));
        assert_eq!(parse("\\timing"), Ok(Command::Timing(None)));
        assert_eq!(
            parse("\\format csv"),
            Ok(Command::Format(Some(OutputFormat::Csv)))
        );
        assert_eq!(parse("\\d  views ;"), Ok(Command::Describe("views".into())));
        assert_eq!(parse("\\streams"), Ok(Command::Streams));
        assert_eq!(
            parse("\\explain SELECT 1;"),
            Ok(Command::Explain("SELECT 1".into()))
        );
        assert_eq!(parse("\\maxrows all"), Ok(Command::MaxRows(Some(None))));
        assert_eq!(parse("\\maxrows 20"), Ok(Command::MaxRows(Some(Some(20)))));
    }

    #[test]
    fn bad_commands_say_what_to_do() {
        let unknown = parse("\\frobnicate").unwrap_err();
        assert!(unknown.contains("\\help"), "{unknown}");
        assert!(parse("\\describe").unwrap_err().contains("\\tables"));
        assert!(
            parse("\\format xml")
                .unwrap_err()
                .contains("table, csv or json")
        );
        assert!(parse("\\timing maybe").unwrap_err().contains("on or off"));
        assert!(parse("\\maxrows 0").is_err());
        assert!(parse("\\quit now").unwrap_err().contains("no argument"));
    }

    #[test]
    fn help_lists_every_command() {
        let help = help();
        for (names, _, _) in COMMANDS {
            assert!(help.contains(names[0]), "{} missing", names[0]);
        }
    }
}
