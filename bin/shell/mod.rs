//! `ember shell`: a SQL shell whose driver is this process (client mode),
//! so its executors live exactly as long as it does. Interactive on a
//! terminal (line editing, history, completion, Ctrl-C cancels the running
//! query); with `-e`, `-f` or piped input it runs the statements as
//! `submit` does and exits non-zero on the first failure.

mod catalog;
mod commands;
mod complete;
mod input;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::error::ArrowError;
use futures::FutureExt;
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{CompletionType, Config, Editor};
use tokio::signal::unix::Signal;
use tokio::sync::mpsc;

use crate::cli::{AppArgs, CANCEL_GRACE, console_progress, fail, interrupted, start_session};
use crate::output::{Limits, OutputFormat, footer, reader_gone, write_batches, write_stream};
use catalog::Listing;
use commands::Command;
use complete::{ShellHelper, Vocabulary};
use ember_actors::JobRows;
use ember_session::master::Master;
use ember_session::{
    Mode, Session, SessionError, SessionOptions, StatementOutcome, statement_failed,
};
use input::{Assembler, Item};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Type \\help in the shell for its commands. Examples:\n  \
ember shell --master local[3]\n  \
ember shell --master ember://127.0.0.1:7077 --total-executor-cores 2\n  \
ember shell -e \"SELECT 1\"\n  \
ember shell < script.sql"
)]
pub struct ShellArgs {
    #[command(flatten)]
    pub app: AppArgs,

    /// Run these statements and backslash commands, then exit (repeatable);
    /// the first failure exits non-zero.
    #[arg(short = 'e', long = "execute", value_name = "SQL")]
    pub execute: Vec<String>,

    /// Run a script file, then exit, as with -e.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "execute"
    )]
    pub file: Option<PathBuf>,

    /// How rows are printed [default: table on a terminal, csv otherwise].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<OutputFormat>,

    /// Where typed statements are kept between sessions [default:
    /// ~/.ember_history].
    #[arg(long, value_name = "FILE", env = "EMBER_HISTORY")]
    pub history: Option<PathBuf>,
}

const PROMPT: &str = "ember> ";
const CONTINUATION: &str = "   ..> ";
/// Rows a table shows unless `\maxrows` says otherwise.
const DEFAULT_MAX_ROWS: usize = 1000;

/// Input that is not typed at a terminal: lines and where they come from.
struct Script {
    name: String,
    lines: mpsc::UnboundedReceiver<std::io::Result<String>>,
}

pub fn run(args: ShellArgs) -> ExitCode {
    let interactive =
        args.execute.is_empty() && args.file.is_none() && std::io::stdin().is_terminal();
    let (conf, request) = match args
        .app
        .conf()
        .and_then(|conf| Ok((conf, args.app.request("ember shell")?)))
    {
        Ok(parts) => parts,
        Err(e) => return fail(&e),
    };
    let script = if interactive {
        None
    } else {
        match script(&args) {
            Ok(script) => Some(script),
            Err(e) => return fail(&e),
        }
    };
    let on_terminal = std::io::stdout().is_terminal();
    let settings = Settings {
        format: args.format.unwrap_or(if on_terminal {
            OutputFormat::Table
        } else {
            OutputFormat::Csv
        }),
        // A person at a terminal sees how long each statement took, as a
        // table's footer always said; scripts' output stays as submit's.
        timing: on_terminal,
        max_rows: Some(DEFAULT_MAX_ROWS),
        on_terminal,
        interactive,
    };
    let master = args.app.master.clone();
    let options = SessionOptions {
        master: master.clone(),
        conf,
        functions: ember_engine::Functions::new(),
        listener: console_progress(),
        files: args.app.files.clone(),
        cluster: args
            .app
            .cluster_settings(request, format!("shell-{}", std::process::id())),
    };
    let history = args.history.clone().or_else(default_history);
    let system = actix::System::new();
    system.block_on(async move {
        let (session, interrupt) = match start_session(options).await {
            Ok(started) => started,
            Err(code) => return code,
        };
        let mut shell = Shell {
            // Only completion reads it, so scripts do without.
            vocabulary: Arc::new(Mutex::new(if interactive {
                catalog::vocabulary(session.context()).await
            } else {
                Vocabulary::default()
            })),
            session,
            settings,
            interrupt,
        };
        let code = match script {
            None => shell.interactive(&master, history).await,
            Some(script) => shell.script(script).await,
        };
        let failure = (code != ExitCode::SUCCESS).then(|| format!("the shell ended with {code:?}"));
        shell.session.stop_with(failure).await;
        code
    })
}

/// The lines of `-e`, `-f FILE` or standard input, read on a thread of
/// their own so the driver keeps running while input is slow.
fn script(args: &ShellArgs) -> Result<Script, String> {
    let (sender, lines) = mpsc::unbounded_channel();
    let name = if !args.execute.is_empty() {
        for line in args.execute.iter().flat_map(|text| text.lines()) {
            let _ = sender.send(Ok(line.to_string()));
        }
        "-e".to_string()
    } else {
        let (name, reader): (String, Box<dyn BufRead + Send>) = match &args.file {
            Some(path) => {
                let file = std::fs::File::open(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                (
                    path.display().to_string(),
                    Box::new(std::io::BufReader::new(file)),
                )
            }
            None => (
                "<stdin>".to_string(),
                Box::new(std::io::BufReader::new(std::io::stdin())),
            ),
        };
        std::thread::spawn(move || {
            for line in reader.lines() {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        name
    };
    Ok(Script { name, lines })
}

fn default_history() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".ember_history"))
}

/// What the user can change with backslash commands, and where output goes.
struct Settings {
    format: OutputFormat,
    timing: bool,
    max_rows: Option<usize>,
    on_terminal: bool,
    interactive: bool,
}

/// Why an item did not run to its end.
enum Failure {
    /// Ctrl-C: the query was cancelled.
    Interrupted,
    /// The reader of standard output went away.
    Closed,
    /// The application is over (`ember kill`, its cluster gave up on it):
    /// nothing more can run.
    Ended(String),
    Error(String),
}

impl From<ArrowError> for Failure {
    fn from(e: ArrowError) -> Self {
        if reader_gone(&e) {
            Failure::Closed
        } else {
            Failure::Error(format!("cannot print results: {e}"))
        }
    }
}

impl From<ember_session::SinkError<ArrowError>> for Failure {
    fn from(e: ember_session::SinkError<ArrowError>) -> Self {
        match e {
            ember_session::SinkError::Rows(e) => Failure::Error(e.to_string()),
            ember_session::SinkError::Sink(e) => e.into(),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        ArrowError::from(e).into()
    }
}

enum Flow {
    Continue,
    Quit,
}

struct Shell {
    session: Session,
    settings: Settings,
    vocabulary: Arc<Mutex<Vocabulary>>,
    interrupt: Option<Signal>,
}

impl Shell {
    async fn interactive(&mut self, master: &Master, history: Option<PathBuf>) -> ExitCode {
        let mut terminal = match Terminal::open(Arc::clone(&self.vocabulary), history) {
            Ok(terminal) => terminal,
            Err(e) => return fail(&format!("cannot use the terminal: {e}")),
        };
        self.banner(master).await;
        let mut input = Assembler::default();
        loop {
            let prompt = if input.in_statement() {
                CONTINUATION
            } else {
                PROMPT
            };
            let line = match terminal.read(prompt).await {
                Read::Line(line) => line,
                // Ctrl-C at the prompt drops what was being typed.
                Read::Interrupted => {
                    input.clear();
                    continue;
                }
                Read::End => {
                    if input.in_statement() {
                        errln!("(the unfinished statement was not run)");
                    }
                    return ExitCode::SUCCESS;
                }
                Read::Failed(e) => return fail(&format!("cannot read the terminal: {e}")),
            };
            let pushed = input.push_line(&line);
            if let Some(entry) = &pushed.history {
                terminal.remember(entry);
            }
            for item in pushed.items {
                match self.run_item(&item).await {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Quit) | Err(Failure::Closed) => return ExitCode::SUCCESS,
                    Err(Failure::Interrupted) => errln!("query cancelled"),
                    Err(Failure::Error(e)) => errln!("error: {e}"),
                    Err(Failure::Ended(e)) => {
                        return fail(&format!("{e}; the application has ended"));
                    }
                }
            }
        }
    }

    /// Runs `-e`, `-f` or piped input as submit runs a job: the first
    /// failure ends it with a non-zero code.
    async fn script(&mut self, mut script: Script) -> ExitCode {
        let mut input = Assembler::default();
        loop {
            let line = tokio::select! {
                line = script.lines.recv() => line,
                _ = interrupted(&mut self.interrupt) => return ExitCode::from(130),
            };
            let (items, ended) = match line {
                Some(Ok(line)) => (input.push_line(&line).items, false),
                Some(Err(e)) => return fail(&format!("cannot read {}: {e}", script.name)),
                None => (input.finish().into_iter().collect(), true),
            };
            for item in items {
                match self.run_item(&item).await {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Quit) | Err(Failure::Closed) => return ExitCode::SUCCESS,
                    Err(Failure::Interrupted) => {
                        errln!("interrupted; the running job was cancelled");
                        return ExitCode::from(130);
                    }
                    Err(Failure::Error(e) | Failure::Ended(e)) => {
                        return fail(&where_failed(&script.name, &item, &e));
                    }
                }
            }
            if ended {
                return ExitCode::SUCCESS;
            }
        }
    }

    async fn banner(&self, master: &Master) {
        let executors = self.session.executors(false).await;
        let slots: usize = executors.iter().map(|e| e.slots).sum();
        let on = match self.session.app_id() {
            Some(app) => format!("application {app} on {master}"),
            None => master.to_string(),
        };
        let plural = if executors.len() == 1 { "" } else { "s" };
        outln!(
            "Ember shell: {on}, {slots} task slots on {} executor{plural}.\n\
             End statements with ';'. \\help for help, \\quit or Ctrl-D to leave.",
            executors.len()
        );
    }

    async fn run_item(&mut self, item: &Item) -> Result<Flow, Failure> {
        match item {
            Item::Sql(statement) => {
                self.statement(&statement.text, Mode::Run).await?;
                Ok(Flow::Continue)
            }
            Item::Command { text, .. } => {
                let command = commands::parse(text).map_err(Failure::Error)?;
                self.command(command).await
            }
        }
    }

    async fn command(&mut self, command: Command) -> Result<Flow, Failure> {
        let mut out = std::io::stdout();
        match command {
            Command::Quit => return Ok(Flow::Quit),
            Command::Help => writeln!(out, "{}", commands::help())?,
            Command::Timing(on) => {
                self.settings.timing = on.unwrap_or(!self.settings.timing);
                let state = if self.settings.timing { "on" } else { "off" };
                writeln!(out, "timing is {state}")?;
            }
            Command::Format(None) => writeln!(out, "format is {:?}", self.settings.format)?,
            Command::Format(Some(format)) => self.settings.format = format,
            Command::MaxRows(None) => match self.settings.max_rows {
                Some(n) => writeln!(out, "tables show up to {n} rows")?,
                None => writeln!(out, "tables show every row")?,
            },
            Command::MaxRows(Some(max)) => self.settings.max_rows = max,
            Command::Tables => {
                let listing = catalog::table_listing(self.session.context()).await?;
                self.print_listing(&listing)?;
            }
            Command::Describe(table) => {
                let listing = catalog::describe(self.session.context(), &table)
                    .await
                    .map_err(Failure::Error)?;
                self.print_listing(&listing)?;
            }
            Command::Explain(sql) => self.statement(&sql, Mode::ExplainOnly).await?,
            Command::Streams => self.statement("SHOW STREAMING QUERIES", Mode::Run).await?,
            Command::Executors => {
                let listing = catalog::executor_listing(self.session.executors(true).await)?;
                self.print_listing(&listing)?;
            }
        }
        Ok(Flow::Continue)
    }

    /// Runs one statement and prints what it gave and, with `\timing` on,
    /// how long it took: in a table's footer, or on a line of its own.
    async fn statement(&mut self, sql: &str, mode: Mode) -> Result<(), Failure> {
        let started = Instant::now();
        let timed = self.settings.timing.then_some(started);
        let footed = match self.cancellable(sql, mode).await? {
            StatementOutcome::Rows(rows) => self.print_rows(rows, timed).await?,
            StatementOutcome::Explain(text) => {
                writeln!(std::io::stdout(), "{text}")?;
                false
            }
            StatementOutcome::Done if self.settings.interactive => {
                writeln!(std::io::stdout(), "OK")?;
                // A table may have come or gone: completion should know.
                let vocabulary = catalog::vocabulary(self.session.context()).await;
                *self
                    .vocabulary
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = vocabulary;
                false
            }
            StatementOutcome::Done => false,
        };
        if let Some(started) = timed.filter(|_| !footed) {
            let took = format!("Time: {:.3} ms", started.elapsed().as_secs_f64() * 1e3);
            if self.settings.on_terminal {
                writeln!(std::io::stdout(), "{took}")?;
            } else {
                errln!("{took}");
            }
        }
        Ok(())
    }

    /// Runs a statement; Ctrl-C meanwhile cancels its job (its tasks are
    /// killed) and the shell goes on.
    async fn cancellable(
        &mut self,
        sql: &str,
        mode: Mode,
    ) -> Result<StatementOutcome<JobRows>, Failure> {
        // A Ctrl-C from before this statement is not meant for it.
        if let Some(signal) = self.interrupt.as_mut() {
            while let Some(Some(())) = signal.recv().now_or_never() {}
        }
        let cancel = self.session.statement_canceller();
        let run = self.session.execute_stream(sql, mode);
        tokio::pin!(run);
        tokio::select! {
            result = &mut run => result.map_err(|e| match e {
                SessionError::DriverGone(_) => Failure::Ended(e.to_string()),
                e => Failure::Error(e.to_string()),
            }),
            _ = interrupted(&mut self.interrupt) => {
                cancel("interrupted (Ctrl-C)");
                tokio::select! {
                    _ = &mut run => {}
                    _ = tokio::time::sleep(CANCEL_GRACE) => {
                        tracing::warn!("the statement did not end within {CANCEL_GRACE:?} of its cancellation");
                    }
                    _ = interrupted(&mut self.interrupt) => {}
                }
                Err(Failure::Interrupted)
            }
        }
    }

    /// Prints a query's rows as they are read, as [`Shell::print`] does;
    /// Ctrl-C stops the printing.
    async fn print_rows(
        &mut self,
        mut rows: JobRows,
        started: Option<Instant>,
    ) -> Result<bool, Failure> {
        let (table, limits) = self.table_limits();
        let format = self.settings.format;
        let mut out = std::io::stdout().lock();
        let written = tokio::select! {
            written = write_stream(&mut out, format, &mut rows, limits) => written?,
            _ = interrupted(&mut self.interrupt) => return Err(Failure::Interrupted),
        };
        if table {
            let (shown, total) = written;
            let total = usize::try_from(total).unwrap_or(usize::MAX);
            writeln!(out, "{}\n", table_footer(shown, total, started))?;
        }
        out.flush()?;
        Ok(table)
    }

    /// Whether rows print as a table on a terminal, and the limits they
    /// print within: its width and `\maxrows` then, none otherwise.
    fn table_limits(&self) -> (bool, Limits) {
        let table = self.settings.format == OutputFormat::Table && self.settings.on_terminal;
        let limits = if table {
            Limits::terminal(self.settings.max_rows)
        } else {
            Limits::default()
        };
        (table, limits)
    }

    fn print_listing(&self, listing: &Listing) -> Result<(), Failure> {
        self.print(&listing.schema, std::slice::from_ref(&listing.batch), None)
            .map(|_| ())
    }

    /// Prints rows in the chosen format; on a terminal, a table is cut to
    /// its width and `\maxrows`, and followed by the row count (and, given
    /// `started`, how long the query took). Returns whether that footer was
    /// printed.
    fn print(
        &self,
        schema: &Schema,
        batches: &[RecordBatch],
        started: Option<Instant>,
    ) -> Result<bool, Failure> {
        let (table, limits) = self.table_limits();
        let mut out = std::io::stdout().lock();
        let shown = write_batches(&mut out, self.settings.format, schema, batches, limits)?;
        if table {
            let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
            writeln!(out, "{}\n", table_footer(shown, total, started))?;
        }
        out.flush()?;
        Ok(table)
    }
}

/// The line under a table: its rows, how long it took, and how to see
/// the rows it left out.
fn table_footer(shown: usize, total: usize, started: Option<Instant>) -> String {
    let mut footer = footer(total, started.map(|s| s.elapsed()));
    if shown < total {
        footer.push_str(&format!(
            " (the first {shown} shown; \\maxrows all or \\format csv shows every one)"
        ));
    }
    footer
}

/// A script failure as submit words it: where, which statement, why.
fn where_failed(source: &str, item: &Item, error: &str) -> String {
    match item {
        Item::Sql(statement) => statement_failed(source, statement, &error),
        Item::Command { line, text } => format!("{source}:{line}: {text}: {error}"),
    }
}

/// What reading the terminal gave.
enum Read {
    Line(String),
    Interrupted,
    End,
    Failed(String),
}

/// The line editor, with completion and a history file.
struct Terminal {
    editor: Option<Editor<ShellHelper, FileHistory>>,
    history: Option<PathBuf>,
    history_failed: bool,
}

impl Terminal {
    fn open(vocabulary: Arc<Mutex<Vocabulary>>, history: Option<PathBuf>) -> Result<Self, String> {
        let config = Config::builder()
            .completion_type(CompletionType::List)
            .auto_add_history(false)
            .history_ignore_space(true)
            .history_ignore_dups(true)
            .map_err(|e| e.to_string())?
            .max_history_size(10_000)
            .map_err(|e| e.to_string())?
            .build();
        let mut editor = Editor::with_config(config).map_err(|e| e.to_string())?;
        editor.set_helper(Some(ShellHelper { vocabulary }));
        if let Some(path) = &history
            && path.exists()
            && let Err(e) = editor.load_history(path)
        {
            errln!(
                "warning: cannot read the history in {}: {e}",
                path.display()
            );
        }
        Ok(Self {
            editor: Some(editor),
            history,
            history_failed: false,
        })
    }

    /// Reads a line on a blocking thread, so the driver goes on meanwhile.
    async fn read(&mut self, prompt: &'static str) -> Read {
        let Some(mut editor) = self.editor.take() else {
            return Read::End;
        };
        let read = tokio::task::spawn_blocking(move || {
            let line = editor.readline(prompt);
            (editor, line)
        })
        .await;
        match read {
            Err(e) => Read::Failed(e.to_string()),
            Ok((editor, line)) => {
                self.editor = Some(editor);
                match line {
                    Ok(line) => Read::Line(line),
                    Err(ReadlineError::Interrupted) => Read::Interrupted,
                    Err(ReadlineError::Eof) => Read::End,
                    Err(e) => Read::Failed(e.to_string()),
                }
            }
        }
    }

    /// Adds an entry to the history and to its file.
    fn remember(&mut self, entry: &str) {
        let Some(editor) = self.editor.as_mut() else {
            return;
        };
        let _ = editor.add_history_entry(entry);
        if let Some(path) = &self.history
            && let Err(e) = editor.append_history(path)
            && !self.history_failed
        {
            self.history_failed = true;
            errln!(
                "warning: cannot keep the history in {}: {e}",
                path.display()
            );
        }
    }
}
