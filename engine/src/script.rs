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
/// pieces are dropped.
pub fn split_statements(script: &str) -> Vec<ScriptStatement> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start_line: Option<usize> = None;
    let mut line = 1;
    let mut chars = script.chars().peekable();
    let push = |text: &mut String, start: &mut Option<usize>, out: &mut Vec<ScriptStatement>| {
        let trimmed = text.trim();
        if let (false, Some(l)) = (trimmed.is_empty(), *start) {
            out.push(ScriptStatement {
                index: out.len() + 1,
                line: l,
                text: trimmed.to_string(),
            });
        }
        text.clear();
        *start = None;
    };
    while let Some(c) = chars.next() {
        match c {
            ';' => push(&mut current, &mut start_line, &mut out),
            '-' if chars.peek() == Some(&'-') => {
                // Line comment: skipped up to the newline, which is kept.
                for n in chars.by_ref() {
                    if n == '\n' {
                        line += 1;
                        current.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if n == '\n' {
                        line += 1;
                        current.push('\n');
                    }
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
                current.push(' ');
            }
            '\'' | '"' | '`' => {
                start_line.get_or_insert(line);
                current.push(c);
                // A doubled quote inside a quoted string is an escaped quote:
                // it closes and reopens, which this loop handles naturally.
                for n in chars.by_ref() {
                    current.push(n);
                    if n == '\n' {
                        line += 1;
                    }
                    if n == c {
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
    push(&mut current, &mut start_line, &mut out);
    out
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
    fn comment_only_script_has_no_statements() {
        assert!(split_statements("-- nothing\n/* here */\n").is_empty());
    }
}
