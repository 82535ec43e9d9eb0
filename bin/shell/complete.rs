//! Tab completion: SQL keywords, functions, the session's tables and their
//! columns, and backslash commands.

use std::sync::{Arc, Mutex, PoisonError};

use rustyline::completion::Completer;
use rustyline::{Context, Helper, Highlighter, Hinter, Validator};

use super::commands::COMMANDS;

/// Keywords worth completing (the parser knows hundreds more).
const KEYWORDS: &[&str] = &[
    "ALL",
    "ALTER",
    "AND",
    "AS",
    "ASC",
    "BETWEEN",
    "BY",
    "CASE",
    "CAST",
    "COPY",
    "CREATE",
    "CROSS",
    "CSV",
    "DESC",
    "DESCRIBE",
    "DISTINCT",
    "DROP",
    "ELSE",
    "END",
    "EXCEPT",
    "EXISTS",
    "EXPLAIN",
    "EXTERNAL",
    "FALSE",
    "FROM",
    "FULL",
    "GROUP",
    "HAVING",
    "IF",
    "IN",
    "INNER",
    "INSERT",
    "INTERSECT",
    "INTERVAL",
    "INTO",
    "IS",
    "JOIN",
    "JSON",
    "LEFT",
    "LIKE",
    "LIMIT",
    "LOCATION",
    "NOT",
    "NULL",
    "NULLS",
    "OFFSET",
    "ON",
    "OPTIONS",
    "OR",
    "ORDER",
    "OUTER",
    "OVER",
    "PARQUET",
    "PARTITION",
    "PARTITIONED",
    "RIGHT",
    "SELECT",
    "SET",
    "SHOW",
    "STORED",
    "TABLE",
    "TABLES",
    "THEN",
    "TO",
    "TRUE",
    "UNION",
    "USING",
    "VALUES",
    "VIEW",
    "WHEN",
    "WHERE",
    "WINDOW",
    "WITH",
];

/// The names completion offers, refreshed as the session's tables change.
#[derive(Debug, Default, Clone)]
pub struct Vocabulary {
    pub tables: Vec<String>,
    pub columns: Vec<String>,
    pub functions: Vec<String>,
}

impl Vocabulary {
    /// Where the word at `pos` starts, and the words it could become.
    pub fn complete(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let before = line.get(..pos).unwrap_or(line);
        let start = before
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == '.'))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let word = &before[start..];
        let head = before[..start].trim_start();
        // A backslash command's name.
        if head == "\\" && line.trim_start().starts_with('\\') {
            let names = COMMANDS
                .iter()
                .flat_map(|(names, _, _)| names.iter())
                .filter_map(|n| n.strip_prefix('\\'))
                .filter(|n| n.starts_with(word))
                .map(str::to_string);
            return (start, sorted(names));
        }
        if word.is_empty() {
            return (start, Vec::new());
        }
        let matches = |name: &&String| starts_with_ignoring_case(name, word);
        // `\describe` and `\d` take a table.
        let first = head.split_whitespace().next().unwrap_or("");
        if matches!(first, "\\describe" | "\\d") {
            return (start, sorted(self.tables.iter().filter(matches).cloned()));
        }
        let lower = word.chars().next().is_some_and(char::is_lowercase);
        let keywords = KEYWORDS
            .iter()
            .filter(|k| starts_with_ignoring_case(k, word))
            .map(|k| {
                if lower {
                    k.to_lowercase()
                } else {
                    k.to_string()
                }
            });
        let names = self
            .tables
            .iter()
            .chain(&self.columns)
            .chain(&self.functions)
            .filter(matches)
            .cloned();
        (start, sorted(names.chain(keywords)))
    }
}

fn starts_with_ignoring_case(name: &str, prefix: &str) -> bool {
    name.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

fn sorted(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut names: Vec<String> = names.collect();
    names.sort();
    names.dedup();
    names
}

/// rustyline's hook: completion from a vocabulary the shell keeps current.
#[derive(Helper, Hinter, Highlighter, Validator)]
pub struct ShellHelper {
    pub vocabulary: Arc<Mutex<Vocabulary>>,
}

impl Completer for ShellHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let vocabulary = self
            .vocabulary
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(vocabulary.complete(line, pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocabulary() -> Vocabulary {
        Vocabulary {
            tables: vec!["views".into(), "videos".into()],
            columns: vec!["country".into(), "video_id".into(), "watch_seconds".into()],
            functions: vec!["count".into(), "coalesce".into()],
        }
    }

    fn complete(line: &str) -> Vec<String> {
        vocabulary().complete(line, line.len()).1
    }

    #[test]
    fn completes_columns_functions_and_keywords_at_the_cursor() {
        assert_eq!(
            complete("SELECT co"),
            vec!["coalesce", "copy", "count", "country"]
        );
        assert_eq!(complete("SELECT watch_s"), vec!["watch_seconds"]);
        assert_eq!(complete("SELECT 1 FR"), vec!["FROM"]);
        assert_eq!(complete("select 1 fr"), vec!["from"]);
        let (start, _) = vocabulary().complete("SELECT sum(watch_s", 18);
        assert_eq!(start, 11, "the word starts after the parenthesis");
        assert!(complete("SELECT ").is_empty(), "no word, no list");
    }

    #[test]
    fn completes_tables_after_describe_and_command_names() {
        assert_eq!(complete("\\describe vi"), vec!["videos", "views"]);
        assert_eq!(complete("\\d vie"), vec!["views"]);
        assert_eq!(complete("\\ex"), vec!["executors", "explain"]);
        assert_eq!(vocabulary().complete("\\ti", 3).0, 1);
        assert_eq!(complete("\\ti"), vec!["timing"]);
    }
}
