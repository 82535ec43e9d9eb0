//! Splits a SQL script into statements at `;`, keeping the line each one starts
//! on so errors can point at it. Quotes and comments are respected.

/// One statement of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptStatement {
    /// 1-based position in the script.
    pub index: usize,
    /// 1-based line the statement starts on.
    pub line: usize,
    /// The statement's text, without the terminating `;`.
    pub text: String,
}

impl ScriptStatement {
    /// The first line of the statement, shortened, for error messages.
    pub fn summary(&self) -> String {
        let first = self.text.lines().next().unwrap_or("").trim();
        if first.chars().count() > 60 {
            let cut: String = first.chars().take(57).collect();
            format!("{cut}...")
        } else {
            first.to_string()
        }
    }
}

/// Splits `script` into its statements; empty statements and comment-only
/// pieces are dropped. The last statement needs no `;`.
pub fn split_statements(script: &str) -> Vec<ScriptStatement> {
    scan(script).statements
}

/// Takes the statements `buffer` ends with a `;` out of it, leaving what
/// follows the last `;` as typed; a tail of only blanks and comments is
/// dropped, so an empty buffer means no statement is under way. For input
/// that arrives line by line, as in a shell.
pub fn take_statements(buffer: &mut String) -> Vec<ScriptStatement> {
    let scanned = scan(buffer);
    let mut statements = scanned.statements;
    if scanned.tail.is_some() {
        statements.pop();
    }
    match scanned.tail {
        Some(start) => {
            buffer.drain(..start);
        }
        None => buffer.clear(),
    }
    statements
}

struct Scan {
    statements: Vec<ScriptStatement>,
    /// Where a last statement without its `;` starts (after the `;` before
    /// it), if there is one or a quote or comment is left open.
    tail: Option<usize>,
}

fn scan(script: &str) -> Scan {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start_line: Option<usize> = None;
    let mut line = 1;
    // Where the piece being read began, and whether a quote or a block
    // comment is still open at the end.
    let mut piece_start = 0;
    let mut open = false;
    let mut chars = script.char_indices().peekable();
    let push = |text: &mut String, start: &mut Option<usize>, out: &mut Vec<ScriptStatement>| {
        let trimmed = text.trim();
        let pushed = matches!((trimmed.is_empty(), *start), (false, Some(_)));
        if let (false, Some(l)) = (trimmed.is_empty(), *start) {
            out.push(ScriptStatement {
                index: out.len() + 1,
                line: l,
                text: trimmed.to_string(),
            });
        }
        text.clear();
        *start = None;
        pushed
    };
    while let Some((at, c)) = chars.next() {
        match c {
            ';' => {
                push(&mut current, &mut start_line, &mut out);
                piece_start = at + 1;
            }
            '-' if chars.peek().is_some_and(|(_, n)| *n == '-') => {
                // Line comment: skipped up to the newline, which is kept.
                for (_, n) in chars.by_ref() {
                    if n == '\n' {
                        line += 1;
                        current.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek().is_some_and(|(_, n)| *n == '*') => {
                chars.next();
                let mut prev = ' ';
                open = true;
                for (_, n) in chars.by_ref() {
                    if n == '\n' {
                        line += 1;
                        current.push('\n');
                    }
                    if prev == '*' && n == '/' {
                        open = false;
                        break;
                    }
                    prev = n;
                }
                current.push(' ');
            }
            '\'' | '"' | '`' => {
                start_line.get_or_insert(line);
                current.push(c);
                open = true;
                // A doubled quote inside a quoted string is an escaped quote:
                // it closes and reopens, which this loop handles naturally.
                for (_, n) in chars.by_ref() {
                    current.push(n);
                    if n == '\n' {
                        line += 1;
                    }
                    if n == c {
                        open = false;
                        break;
                    }
                }
            }
            '\n' => {
                line += 1;
                current.push(c);
            }
            c => {
                if !c.is_whitespace() {
                    start_line.get_or_insert(line);
                }
                current.push(c);
            }
        }
    }
    let unterminated = push(&mut current, &mut start_line, &mut out);
    Scan {
        statements: out,
        tail: (unterminated || open).then_some(piece_start),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_semicolons_outside_quotes_and_comments() {
        let script = "-- header; not a statement\nSELECT 'a;b' AS x;\n\n/* c; */ SELECT \"weird;col\"\nFROM t;\n  ;\nSELECT 1";
        let stmts = split_statements(script);
        let texts: Vec<_> = stmts.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts[0], "SELECT 'a;b' AS x");
        assert!(texts[1].starts_with("SELECT \"weird;col\""));
        assert!(texts[1].ends_with("FROM t"));
        assert_eq!(texts[2], "SELECT 1");
        assert_eq!(stmts.len(), 3);
        let lines: Vec<_> = stmts.iter().map(|s| s.line).collect();
        assert_eq!(lines, vec![2, 4, 7]);
        assert_eq!(stmts[2].index, 3);
    }

    #[test]
    fn escaped_quotes_stay_inside_the_string() {
        let stmts = split_statements("SELECT 'it''s; fine'; SELECT 2;");
        assert_eq!(stmts.len(), 2);
        assert_eq!(stmts[0].text, "SELECT 'it''s; fine'");
    }

    #[test]
    fn statements_are_taken_as_their_semicolons_arrive() {
        let mut buffer = String::from("SELECT 1; SELECT\n");
        let taken = take_statements(&mut buffer);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].text, "SELECT 1");
        assert_eq!(buffer, " SELECT\n");
        buffer.push_str("  2;  -- done\n");
        let taken = take_statements(&mut buffer);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].text, "SELECT\n  2");
        assert!(
            buffer.is_empty(),
            "a comment-only tail is dropped: {buffer:?}"
        );
    }

    #[test]
    fn an_open_quote_or_comment_keeps_the_statement_going() {
        let mut buffer = String::from("SELECT 'a;\n");
        assert!(take_statements(&mut buffer).is_empty());
        assert_eq!(buffer, "SELECT 'a;\n");
        buffer.push_str("b' AS x;");
        let taken = take_statements(&mut buffer);
        assert_eq!(taken[0].text, "SELECT 'a;\nb' AS x");
        assert!(buffer.is_empty());

        let mut buffer = String::from("/* a; b\n");
        assert!(take_statements(&mut buffer).is_empty());
        assert_eq!(buffer, "/* a; b\n", "still inside the comment");
        buffer.push_str("*/ SELECT 3;");
        assert_eq!(take_statements(&mut buffer)[0].text, "SELECT 3");
    }

    #[test]
    fn comment_only_script_has_no_statements() {
        assert!(split_statements("-- nothing\n/* here */\n").is_empty());
    }
}
