//! From lines typed or read to what the shell runs: SQL statements, which
//! end at `;` and may span lines, and backslash commands, one a line.

use ember_engine::script::{ScriptStatement, take_statements};

/// One thing to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Sql(ScriptStatement),
    /// A backslash command (`quit` and `exit` become `\quit`), with its line.
    Command {
        line: usize,
        text: String,
    },
}

/// What one line gave.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    pub items: Vec<Item>,
    /// The lines typed since the shell was last between statements, once
    /// it is again: one history entry.
    pub history: Option<String>,
}

/// Gathers lines into statements, keeping the line each starts on.
#[derive(Debug)]
pub struct Assembler {
    buffer: String,
    /// The input line the buffer's text starts on.
    buffer_line: usize,
    next_line: usize,
    statements: usize,
    typed: Vec<String>,
}

impl Default for Assembler {
    fn default() -> Self {
        Self {
            buffer: String::new(),
            buffer_line: 1,
            next_line: 1,
            statements: 0,
            typed: Vec::new(),
        }
    }
}

impl Assembler {
    /// Whether a statement has begun and waits for its `;`.
    pub fn in_statement(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// Forgets a statement under way (Ctrl-C at the prompt).
    pub fn clear(&mut self) {
        self.buffer.clear();
        self.typed.clear();
    }

    pub fn push_line(&mut self, line: &str) -> Pushed {
        let number = self.next_line;
        self.next_line += 1;
        let mut pushed = Pushed::default();
        if line.trim().is_empty() && !self.in_statement() {
            return pushed;
        }
        self.typed.push(line.to_string());
        if !self.in_statement() {
            if let Some(text) = command(line) {
                pushed.items.push(Item::Command { line: number, text });
                pushed.history = Some(self.typed.join("\n"));
                self.typed.clear();
                return pushed;
            }
            self.buffer_line = number;
        }
        self.buffer.push_str(line);
        self.buffer.push('\n');
        let before = self.buffer.clone();
        for mut statement in take_statements(&mut self.buffer) {
            self.statements += 1;
            statement.index = self.statements;
            statement.line += self.buffer_line - 1;
            pushed.items.push(Item::Sql(statement));
        }
        if self.in_statement() {
            let taken = before.len() - self.buffer.len();
            self.buffer_line += before[..taken].matches('\n').count();
        } else {
            pushed.history = Some(self.typed.join("\n"));
            self.typed.clear();
        }
        pushed
    }

    /// The statement left without its `;` when input ends, which runs as
    /// the last one (as in a script file).
    pub fn finish(&mut self) -> Option<Item> {
        let rest = std::mem::take(&mut self.buffer);
        let mut statement = ember_engine::script::split_statements(&rest)
            .into_iter()
            .next()?;
        self.statements += 1;
        statement.index = self.statements;
        statement.line += self.buffer_line - 1;
        Some(Item::Sql(statement))
    }
}

/// The backslash command a line between statements is, if it is one.
fn command(line: &str) -> Option<String> {
    let trimmed = line.trim();
    if trimmed.starts_with('\\') {
        return Some(trimmed.to_string());
    }
    let word = trimmed.trim_end_matches(';').trim();
    (word.eq_ignore_ascii_case("quit") || word.eq_ignore_ascii_case("exit"))
        .then(|| "\\quit".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(items: &[Item]) -> Vec<(usize, usize, &str)> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Sql(s) => Some((s.index, s.line, s.text.as_str())),
                Item::Command { .. } => None,
            })
            .collect()
    }

    #[test]
    fn statements_span_lines_until_their_semicolon() {
        let mut input = Assembler::default();
        let first = input.push_line("SELECT country,");
        assert!(first.items.is_empty());
        assert!(first.history.is_none());
        assert!(input.in_statement());
        let second = input.push_line("  count(*) FROM views GROUP BY 1;");
        assert_eq!(
            sql(&second.items),
            vec![(1, 1, "SELECT country,\n  count(*) FROM views GROUP BY 1")]
        );
        assert_eq!(
            second.history.as_deref(),
            Some("SELECT country,\n  count(*) FROM views GROUP BY 1;")
        );
        assert!(!input.in_statement());
    }

    #[test]
    fn several_statements_on_a_line_keep_their_numbers_and_lines() {
        let mut input = Assembler::default();
        input.push_line("-- a comment");
        let pushed = input.push_line("SELECT 1; SELECT");
        assert_eq!(sql(&pushed.items), vec![(1, 2, "SELECT 1")]);
        input.push_line("");
        let pushed = input.push_line("2;");
        assert_eq!(sql(&pushed.items), vec![(2, 2, "SELECT\n\n2")]);
        let pushed = input.push_line("SELECT 3");
        assert!(pushed.items.is_empty());
        assert_eq!(
            input.finish(),
            Some(Item::Sql(ScriptStatement {
                index: 3,
                line: 5,
                text: "SELECT 3".into()
            }))
        );
    }

    #[test]
    fn backslash_commands_and_quit_between_statements() {
        let mut input = Assembler::default();
        let pushed = input.push_line("  \\describe views ");
        assert_eq!(
            pushed.items,
            vec![Item::Command {
                line: 1,
                text: "\\describe views".into()
            }]
        );
        assert_eq!(pushed.history.as_deref(), Some("  \\describe views "));
        for quit in ["quit", "EXIT;", " exit "] {
            assert_eq!(
                input.push_line(quit).items,
                vec![Item::Command {
                    line: input.next_line - 1,
                    text: "\\quit".into()
                }],
            );
        }
        // Inside a statement a backslash is part of the SQL.
        input.push_line("SELECT");
        let pushed = input.push_line("'\\n';");
        assert_eq!(sql(&pushed.items), vec![(1, 5, "SELECT\n'\\n'")]);
    }

    #[test]
    fn clearing_forgets_the_statement_under_way() {
        let mut input = Assembler::default();
        input.push_line("SELECT broken");
        input.clear();
        assert!(!input.in_statement());
        assert_eq!(input.finish(), None);
        let pushed = input.push_line("SELECT 1;");
        assert_eq!(pushed.history.as_deref(), Some("SELECT 1;"));
    }
}
