//! `ember shell` driven as a person drives it: through a pseudo-terminal,
//! typing statements, Tab and Ctrl-C, in local mode and against a loopback
//! cluster; and fed by `-e` and a pipe, as scripts use it.

use ember_testkit::BoundedChild;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ember_testkit::{self as loopback, processes, wait_gone};
use rexpect::reader::Options;
use rexpect::session::{PtySession, spawn_with_options};

use crate::cluster::Cluster;
use crate::support::text;

const CREATE_VIEWS: &str = "CREATE EXTERNAL TABLE views STORED AS CSV LOCATION 'examples/data/views/' OPTIONS ('format.has_header' 'true');";

/// A query that runs until it is cancelled: one task scanning billions of
/// generated rows.
const LONG_QUERY: &str =
    "SELECT count(*) AS n FROM generate_series(1, 50000000000) AS t(v) WHERE v % 7 = 3;";

/// The shell's prompt.
const PROMPT: &str = "ember> ";

/// How long a shell may take to exit once its terminal says it ended.
const EXIT_BOUND: Duration = Duration::from_secs(20);

fn ember() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ember"))
}

/// Views per country in the bundled sample data, counted from the files.
fn views_per_country() -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/views");
    for entry in std::fs::read_dir(dir).unwrap() {
        let body = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in body.lines().skip(1).filter(|l| !l.is_empty()) {
            let country = line.rsplit(',').next().unwrap().to_string();
            *counts.entry(country).or_insert(0) += 1;
        }
    }
    counts
}

/// A shell on a pseudo-terminal.
struct Pty {
    session: PtySession,
}

impl Pty {
    /// Starts `command` (an `ember shell ...`) on a terminal of its own,
    /// from the repository, keeping its history in `history`.
    fn spawn(mut command: Command, history: &Path) -> Self {
        command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("TERM", "xterm")
            .env("EMBER_HISTORY", history)
            .env_remove("RUST_LOG");
        let options = Options::new()
            .timeout_ms(Some(60_000))
            .strip_ansi_escape_codes(true);
        let mut session = spawn_with_options(command, options).unwrap();
        // A shell that ignores SIGTERM is killed rather than waited on
        // for ever when the test ends early.
        session.process_mut().set_kill_timeout(Some(5_000));
        let mut pty = Self { session };
        pty.expect(PROMPT);
        pty
    }

    fn local(history: &Path) -> Self {
        let mut command = Command::new(ember());
        command.args(["shell", "--master", "local[2]"]);
        Self::spawn(command, history)
    }

    /// Reads up to `needle`; returns what came before it.
    fn expect(&mut self, needle: &str) -> String {
        match self.session.exp_string(needle) {
            Ok(before) => before.replace('\r', ""),
            Err(e) => panic!("waiting for {needle:?}: {e}"),
        }
    }

    /// Reads up to a match of `pattern`; returns what came before and the
    /// match.
    fn expect_regex(&mut self, pattern: &str) -> (String, String) {
        match self.session.exp_regex(pattern) {
            Ok((before, found)) => (before.replace('\r', ""), found),
            Err(e) => panic!("waiting for /{pattern}/: {e}"),
        }
    }

    /// Makes the terminal `columns` wide, as a window resize does.
    fn resize(&mut self, columns: u16) {
        use std::os::fd::AsRawFd;
        let pty = self.session.process().get_file_handle().unwrap();
        let size = libc::winsize {
            ws_row: 40,
            ws_col: columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which
        // lives across the call.
        let set = unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
    }

    /// Types `text` and Enter.
    fn line(&mut self, text: &str) {
        self.session.send_line(text).unwrap();
        self.session.flush().unwrap();
    }

    /// Types `text` as is (Tab, arrows).
    fn keys(&mut self, text: &str) {
        self.session.send(text).unwrap();
        self.session.flush().unwrap();
    }

    fn ctrl(&mut self, key: char) {
        self.session.send_control(key).unwrap();
    }

    /// Waits for the prompt, then presses Ctrl-D. Pressed before the line
    /// editor has the terminal (while the last output is still being
    /// printed), Ctrl-D is the cooked terminal's end of file, which reaches
    /// the editor as a NUL byte, and the shell would wait for more input.
    fn leave_with_ctrl_d(&mut self) {
        self.expect(PROMPT);
        self.ctrl('d');
    }

    /// Runs a query and returns the rows of the table it printed, cells
    /// trimmed, without the header.
    fn query(&mut self, sql: &str) -> Vec<Vec<String>> {
        self.line(sql);
        let (table, _) = self.expect_regex(r"\d+ rows? in [0-9.]+ s");
        table_rows(&table)
    }

    /// Waits for the shell to exit, within a bound; its exit code.
    fn exit_code(&mut self) -> i32 {
        use rexpect::process::WaitStatus;
        let rest = self.session.exp_eof();
        let deadline = Instant::now() + EXIT_BOUND;
        loop {
            match self.session.process().status() {
                Some(WaitStatus::Exited(_, code)) => return code,
                Some(WaitStatus::StillAlive) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => {
                    let _ = self
                        .session
                        .process_mut()
                        .signal(rexpect::process::Signal::SIGKILL);
                    panic!(
                        "the shell did not exit within {EXIT_BOUND:?} of its output's end \
                         ({other:?}); it printed last: {rest:?}"
                    );
                }
            }
        }
    }
}

/// The body rows of the last aligned table in `output`.
fn table_rows(output: &str) -> Vec<Vec<String>> {
    // Progress bars drawn and cleared on the terminal leave their text in
    // front of the table's first border once escape codes are stripped.
    let lines: Vec<&str> = output
        .lines()
        .map(|l| match l.find("+-") {
            Some(at) if l.ends_with('+') => &l[at..],
            _ => l,
        })
        .collect();
    // The table ends at the last border line; its header is the first
    // `|` line after the border that opens it.
    let borders: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("+-"))
        .collect();
    assert!(borders.len() >= 3, "no table in:\n{output}");
    let (open, close) = (borders[borders.len() - 3], borders[borders.len() - 1]);
    lines[open..close]
        .iter()
        .filter(|l| l.starts_with('|'))
        .skip(1)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_string())
                .collect()
        })
        .collect()
}

fn counts(rows: &[Vec<String>]) -> BTreeMap<String, u64> {
    rows.iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect()
}

#[test]
fn a_local_shell_runs_what_is_typed_and_survives_mistakes() {
    let home = tempfile::tempdir().unwrap();
    let history = home.path().join("history");
    let mut shell = Pty::local(&history);

    // A statement over two lines, then a grouped query with the right rows.
    shell.line("CREATE EXTERNAL TABLE views STORED AS CSV");
    shell.expect("..> ");
    shell.line("LOCATION 'examples/data/views/' OPTIONS ('format.has_header' 'true');");
    shell.expect("OK");
    let rows =
        shell.query("SELECT country, count(*) AS n FROM views GROUP BY country ORDER BY country;");
    assert_eq!(counts(&rows), views_per_country());

    // Tab completes a column name.
    shell.keys("SELECT sum(watch_sec\t) AS total_watch FROM views;\n");
    let (table, _) = shell.expect_regex(r"1 row in [0-9.]+ s");
    assert!(table.contains("total_watch"), "{table}");
    let total: u64 = table_rows(&table)[0][0].parse().unwrap();
    assert!(total > 0);

    // A table wider than the terminal is cut to it, narrow columns whole.
    shell.resize(60);
    let long = "a remark far too long to fit in sixty columns of terminal";
    let (table, _) = {
        shell.line(&format!(
            "SELECT country, '{long}' AS remark FROM views WHERE country = 'US' LIMIT 1;"
        ));
        shell.expect_regex(r"1 row in [0-9.]+ s")
    };
    let rows = table_rows(&table);
    assert_eq!(rows[0][0], "US");
    assert!(rows[0][1].starts_with("a remark far"), "{rows:?}");
    assert!(!rows[0][1].contains("terminal"), "cut: {rows:?}");
    for line in table.lines().filter(|l| l.starts_with('|')) {
        // The cut ends in an ellipsis: three bytes, read here as three
        // characters.
        assert!(line.chars().count() <= 62, "wider than 60: {line:?}");
    }
    shell.resize(200);

    // Mistakes print and the session goes on, tables and all.
    shell.line("SELECT nope FROM views;");
    shell.expect("error: ");
    shell.expect("No field named nope");
    shell.line("\\describe missing_table");
    shell.expect("no table named missing_table");
    shell.line("\\describe views");
    let (described, _) = shell.expect_regex(r"5 rows");
    assert!(
        described.contains("watch_seconds") && described.contains("Int64"),
        "{described}"
    );
    shell.line("\\tables");
    let (tables, _) = shell.expect_regex(r"1 row\b");
    assert_eq!(table_rows(&tables)[0][0], "views");

    // Settings: timing, CSV, the stage graph, executors.
    shell.line("\\timing on");
    shell.expect("timing is on");
    shell.line("\\format csv");
    shell.line("SELECT country FROM views WHERE country = 'US' LIMIT 2;");
    shell.expect("country\nUS\nUS\n".replace('\n', "\r\n").as_str());
    shell.expect("Time: ");
    shell.line("\\explain SELECT country, count(*) FROM views GROUP BY country;");
    shell.expect_regex(r"Stage \d+ \(result, 2 tasks, reads stage \d+\)");
    shell.line("\\format table");
    shell.line("\\executors");
    let (executors, _) = shell.expect_regex(r"1 row\b");
    let executors = table_rows(&executors);
    // local[2]: one executor in this process with two task slots.
    assert_eq!(executors.len(), 1);
    let executor = &executors[0];
    assert_eq!(
        (
            executor[1].as_str(),
            executor[2].as_str(),
            executor[3].as_str()
        ),
        ("localhost", "2", "ACTIVE")
    );
    let succeeded: u64 = executor[5].parse().unwrap();
    assert!(
        succeeded >= 3,
        "the queries' tasks are counted: {executor:?}"
    );
    // Memory held of the process's budget, bytes spilled, shuffle bytes on
    // disk, and the process's peak RSS.
    assert!(executor[7].contains(" / "), "{executor:?}");
    assert!(executor[8].ends_with('B'), "{executor:?}");
    assert!(executor[9].ends_with('B'), "{executor:?}");
    assert!(executor[10].ends_with("MB"), "{executor:?}");

    shell.line("\\quit");
    assert_eq!(shell.exit_code(), 0);
    let kept = std::fs::read_to_string(&history).unwrap();
    assert!(kept.contains("\\describe views"), "{kept}");
    assert!(
        kept.contains("GROUP BY country ORDER BY country;"),
        "{kept}"
    );
}

#[test]
fn ctrl_c_cancels_the_running_query_and_the_shell_goes_on() {
    let home = tempfile::tempdir().unwrap();
    let history = home.path().join("history");
    let mut shell = Pty::local(&history);
    shell.line(LONG_QUERY);
    // Its stage is running when the progress bar shows.
    shell.expect_regex(r"\[Stage \d+:");
    let pressed = Instant::now();
    shell.ctrl('c');
    shell.expect("query cancelled");
    assert!(
        pressed.elapsed() < Duration::from_secs(10),
        "cancelling took {:?}",
        pressed.elapsed()
    );
    let rows = shell.query("SELECT 40 + 2 AS answer;");
    assert_eq!(rows, vec![vec!["42".to_string()]]);
    // Ctrl-C at the prompt drops the statement being typed.
    shell.keys("SELECT 'dropped'");
    shell.expect("SELECT 'dropped'");
    shell.ctrl('c');
    // Keys typed in the same instant as Ctrl-C are dropped with the line,
    // so wait for the new prompt.
    shell.expect(PROMPT);
    shell.line("SELECT 'kept' AS word;");
    let (table, _) = shell.expect_regex(r"1 row in");
    assert!(!table.contains("| dropped"), "{table}");
    assert_eq!(table_rows(&table), vec![vec!["kept".to_string()]]);
    // Ctrl-D leaves.
    shell.leave_with_ctrl_d();
    assert_eq!(shell.exit_code(), 0);

    // The history outlives the shell: Up brings back the last statement.
    let mut again = Pty::local(&history);
    again.keys("\x1b[A\n");
    let (table, _) = again.expect_regex(r"1 row in");
    assert_eq!(table_rows(&table), vec![vec!["kept".to_string()]]);
    again.leave_with_ctrl_d();
    assert_eq!(again.exit_code(), 0);
}

#[test]
fn timing_off_hides_how_long_statements_took_and_on_brings_it_back() {
    let home = tempfile::tempdir().unwrap();
    let mut shell = Pty::local(&home.path().join("history"));
    // On a terminal, timing is on: a table's footer says how long.
    shell.line("SELECT 1 AS one;");
    shell.expect_regex(r"1 row in [0-9.]+ s");

    shell.line("\\timing off");
    shell.expect("timing is off");
    shell.line("SELECT 2 AS two;");
    let (_, footer) = shell.expect_regex(r"1 row[^\r\n]*\r\n");
    assert_eq!(footer, "1 row\r\n", "no time in the footer");
    shell.line("\\format csv");
    shell.line("CREATE VIEW three AS SELECT 3 AS three;");
    shell.expect("OK");
    shell.line("SELECT * FROM three;");
    shell.line("SELECT 'end' AS marker;");
    let before = shell.expect("marker\r\nend\r\n");
    assert!(before.contains("three\n3\n"), "{before}");
    assert!(!before.contains("Time:"), "no timing lines: {before}");

    shell.line("\\timing on");
    shell.expect("timing is on");
    shell.line("SELECT 4 AS four;");
    shell.expect("four\r\n4\r\n");
    shell.expect_regex(r"Time: [0-9.]+ ms");
    shell.line("\\format table");
    shell.line("SELECT 5 AS five;");
    shell.expect_regex(r"1 row in [0-9.]+ s");
    shell.line("\\quit");
    assert_eq!(shell.exit_code(), 0);
}

#[test]
fn a_shell_on_a_cluster_holds_executors_until_it_quits() {
    let cluster = Cluster::start();
    let home = tempfile::tempdir().unwrap();
    let name = "shell-on-cluster";
    let command = cluster.ember(&["shell", "--total-executor-cores", "2", "--name", name]);
    let mut shell = Pty::spawn(command, &home.path().join("history"));
    let status = cluster.wait_for("the shell's application", Duration::from_secs(20), |s| {
        loopback::app(s, name).is_some_and(|a| a["state"] == "RUNNING")
    });
    let app = loopback::app(&status, name).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let executors = processes("executor", &app);
    assert_eq!(executors.len(), 2, "two executor processes for {app}");

    shell.line(CREATE_VIEWS);
    shell.expect("OK");
    let rows =
        shell.query("SELECT country, count(*) AS n FROM views GROUP BY country ORDER BY country;");
    assert_eq!(counts(&rows), views_per_country());

    shell.line("\\executors");
    let (listed, _) = shell.expect_regex(r"2 rows");
    let listed = table_rows(&listed);
    assert!(
        listed
            .iter()
            .all(|e| e[1] == "127.0.0.1" && e[2] == "1" && e[3] == "ACTIVE"),
        "{listed:?}"
    );
    // Each executor's budget is --executor-memory's default, 1g.
    assert!(
        listed
            .iter()
            .all(|e| e[7].ends_with(" / 1 GB") && e[9].ends_with('B') && e[10].ends_with("MB")),
        "{listed:?}"
    );

    // Ctrl-C stops the query's tasks, not the application.
    shell.line(LONG_QUERY);
    shell.expect_regex(r"\[Stage \d+:");
    shell.ctrl('c');
    shell.expect("query cancelled");
    let rows = shell.query("SELECT count(*) AS n FROM views WHERE country = 'US';");
    assert_eq!(rows[0][0], views_per_country()["US"].to_string());
    assert_eq!(
        processes("executor", &app),
        executors,
        "the same executors serve on"
    );

    // Quitting ends the application: its executors go at once.
    shell.line("\\quit");
    assert_eq!(shell.exit_code(), 0);
    let took = wait_gone(&executors, Duration::from_secs(10));
    assert!(took.is_some(), "executors of {app} outlived the shell");
    cluster.wait_for(
        "the manager to see the app finish",
        Duration::from_secs(10),
        |s| {
            loopback::app(s, name).is_some_and(|a| a["state"] == "FINISHED")
                && s["workers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|w| w["cores_used"] == 0)
        },
    );

    // A shell whose application is killed says so and leaves.
    let killed = "killed-shell";
    let command = cluster.ember(&["shell", "--total-executor-cores", "1", "--name", killed]);
    let mut shell = Pty::spawn(command, &home.path().join("history"));
    let status = cluster.wait_for(
        "the second shell's application",
        Duration::from_secs(20),
        |s| loopback::app(s, killed).is_some_and(|a| a["state"] == "RUNNING"),
    );
    let app = loopback::app(&status, killed).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = cluster.run(&["kill", &app]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    cluster.wait_for("the kill", Duration::from_secs(10), |s| {
        loopback::app(s, killed).is_some_and(|a| a["state"] != "RUNNING")
    });
    shell.line("SELECT 1;");
    shell.expect("the application has ended");
    assert_eq!(shell.exit_code(), 1);
}

fn shell(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(ember())
        .arg("shell")
        .args(["--master", "local[2]"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("EMBER_HISTORY", "/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.bounded_wait_with_output().unwrap()
}

#[test]
fn scripts_run_as_submit_runs_them() {
    // -e: statements (the last without ';') and commands, CSV when piped.
    let out = shell(&["-e", "SELECT 1 AS one; SELECT 'a;b' AS two"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "one\n1\ntwo\na;b\n");

    // The example job piped in prints what submit prints.
    let job = std::fs::read_to_string("examples/watch_time.sql").unwrap();
    let out = shell(&[], Some(&job));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        crate::support::local_rows(Path::new("examples/watch_time.sql"))
    );

    // The first failure stops the script, says where, and exits non-zero.
    let script = format!(
        "{CREATE_VIEWS}\n\\format json\nSELECT count(*) AS n\n  FROM views;\nSELECT nope FROM views;\nSELECT 'never' AS x;\n"
    );
    let out = shell(&[], Some(&script));
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("{\"n\":"), "{stdout}");
    assert!(!stdout.contains("never"), "{stdout}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("<stdin>:5: statement 3 (SELECT nope FROM views) failed"),
        "{stderr}"
    );

    // A bad command fails the script too, naming it.
    let out = shell(&["-e", "\\format xml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("use table, csv or json"),
        "{}",
        text(&out.stderr)
    );

    // A missing script file is named.
    let out = shell(&["-f", "no/such/script.sql"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read no/such/script.sql"));
}

/// A streaming query started in the shell runs in the background: the
/// shell goes on, its memory table fills, Ctrl-C cancels the statement in
/// front and not the stream, `\streams` lists it, and it stops when told.
#[test]
fn a_stream_runs_behind_the_shell_until_it_is_stopped() {
    let home = tempfile::tempdir().unwrap();
    let history = home.path().join("history");
    let mut shell = Pty::local(&history);
    shell.line(
        "CREATE UNBOUNDED EXTERNAL TABLE ticks STORED AS RATE LOCATION 'rate:' \
         OPTIONS ('rowsPerSecond' '1000');",
    );
    shell.expect("OK");
    shell.line(
        "START STREAMING QUERY ticking TRIGGER PROCESSING TIME '100 ms' INTO MEMORY \
         AS SELECT value FROM ticks;",
    );
    shell.expect("OK");
    shell.line("AWAIT STREAMING QUERY ticking TIMEOUT '500 ms';");
    shell.expect("OK");
    let rows = shell.query("SELECT count(*) > 0 AS filling FROM ticking;");
    assert_eq!(rows, vec![vec!["true".to_string()]]);
    shell.line(LONG_QUERY);
    shell.expect_regex(r"\[Stage \d+:");
    shell.ctrl('c');
    shell.expect("query cancelled");
    let shown = |shell: &mut Pty| {
        shell.line("\\streams");
        let (table, _) = shell.expect_regex(r"\d+ rows? in [0-9.]+ s");
        table
    };
    let listed = shown(&mut shell);
    assert!(
        listed.contains("ticking") && listed.contains("running"),
        "{listed}"
    );
    // Its batches draw no progress bars over the shell.
    assert!(!listed.contains("[Stage"), "{listed}");
    shell.line("STOP STREAMING QUERY ticking;");
    shell.expect("OK");
    let listed = shown(&mut shell);
    assert!(listed.contains("stopped"), "{listed}");
    shell.leave_with_ctrl_d();
    assert_eq!(shell.exit_code(), 0);
}
