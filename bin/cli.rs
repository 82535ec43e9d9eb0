//! The `ember` command line: `--role` for cluster processes, subcommands for
//! people (`submit`, `gen`, `config`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use datafusion::arrow::error::ArrowError;
use ember_actors::config::{ConfigError, KEYS, env_name};
use ember_actors::{EmberConf, JobListener};
use ember_engine::script::{ScriptStatement, split_statements};

use crate::datagen::{ViewsSpec, generate_views};
use crate::master::Master;
use crate::output::{OutputFormat, write_rows};
use crate::progress::ConsoleProgress;
use crate::session::{Mode, Session, SessionOptions, StatementOutcome};

#[derive(Debug, Parser)]
#[command(
    name = "ember",
    version,
    about = "Run Spark-style SQL applications on a driver and executors",
    long_about = None,
    args_conflicts_with_subcommands = true,
    override_usage = "ember <COMMAND> [OPTIONS]\n       ember --role <ROLE> [OPTIONS]",
    after_help = "Examples:\n  ember submit examples/watch_time.sql\n  ember submit --master local[3] --format csv examples/watch_time.sql\n  ember gen views --rows 10000000 --files 8 --out /tmp/views"
)]
pub struct Cli {
    /// Run as a cluster process instead of a command.
    #[arg(long, value_enum, value_name = "ROLE")]
    pub role: Option<Role>,

    /// More log output: -v for info, -vv for debug (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Driver,
    Executor,
    ClusterManager,
    Worker,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a SQL job: a script of statements separated by ';'.
    Submit(SubmitArgs),
    /// Generate sample data sets.
    #[command(subcommand)]
    Gen(GenCommand),
    /// Manage the cluster's certificates (its CA and each node's).
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Show configuration keys, their defaults and meaning.
    Config {
        /// List every key.
        #[arg(long)]
        list: bool,
    },
    /// Run a bare node with a probe actor until standard input closes
    /// (transport checks and benchmarks).
    #[command(hide = true)]
    ProbeNode(ProbeNodeArgs),
}

#[derive(Debug, Args)]
pub struct ProbeNodeArgs {
    /// Directory with the cluster CA and this node's certificate.
    #[arg(long, value_name = "DIR")]
    pub certs: PathBuf,
    /// This node's certificate name.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// Threads that spin on the CPU while the node runs (load tests).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub burn: usize,
    /// A transport property (repeatable); see `ember config --list`.
    #[arg(long = "conf", short = 'c', value_name = "KEY=VALUE")]
    pub conf: Vec<String>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "The job runs statement by statement; each query's rows are printed. \
A failing statement stops the job with a non-zero exit code."
)]
pub struct SubmitArgs {
    /// The SQL script to run (DataFusion SQL: CREATE EXTERNAL TABLE, SELECT, COPY ... TO, EXPLAIN).
    #[arg(value_name = "JOB_FILE")]
    pub job: PathBuf,

    /// Where to run: local, local[N], local[*] or local[N,F] (F: attempts per task).
    #[arg(long, value_name = "MASTER_URL", default_value = "local[*]")]
    pub master: Master,

    /// Where the driver runs; local mode has only `client` (in this process).
    #[arg(long, value_enum, value_name = "MODE", default_value = "client")]
    pub deploy_mode: DeployMode,

    /// A name for the application, shown in logs.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// A configuration property (repeatable); see `ember config --list`.
    #[arg(long = "conf", short = 'c', value_name = "KEY=VALUE")]
    pub conf: Vec<String>,

    /// How rows are printed [default: table on a terminal, csv otherwise].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<OutputFormat>,

    /// Show each query's stage graph instead of running it.
    #[arg(long)]
    pub explain: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeployMode {
    Client,
    Cluster,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Make the cluster's certificate authority (DIR/ca.pem, DIR/ca.key).
    Init {
        /// Directory for the CA; created if missing.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The cluster's name, written into the CA.
        #[arg(long, default_value = "ember")]
        name: String,
        /// Days the CA is valid.
        #[arg(long, default_value_t = ember_certs::DEFAULT_CA_DAYS)]
        days: u32,
        /// Replace an existing CA (every certificate it issued stops working).
        #[arg(long)]
        force: bool,
    },
    /// Issue a node certificate signed by the CA (DIR/NAME.pem, DIR/NAME.key).
    Issue {
        /// Directory holding the CA.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// What the node is: cluster-manager, worker or client.
        #[arg(long)]
        role: ember_certs::Role,
        /// The node's name.
        #[arg(long)]
        name: String,
        /// A host name or IP address the node is reached at (repeatable;
        /// default: localhost, 127.0.0.1 and ::1).
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = ember_certs::DEFAULT_NODE_DAYS)]
        days: u32,
    },
    /// Print a certificate's subject, role, hosts and validity.
    Show {
        /// A PEM certificate file.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum GenCommand {
    /// Video-view events: event_time,user_id,video_id,watch_seconds,country.
    Views {
        /// Rows in all.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Files to spread them over.
        #[arg(long, default_value_t = 8)]
        files: usize,
        /// Directory to write into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Seed: the same seed gives the same files.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// The day the events happen on.
        #[arg(long, default_value = "2026-11-01")]
        day: String,
        /// Distinct videos.
        #[arg(long, default_value_t = 20_000)]
        videos: u64,
        /// Replace CSV files already in DIR.
        #[arg(long)]
        force: bool,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    if let Some(role) = cli.role {
        let name = role
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default();
        eprintln!(
            "error: the {name} role is not available yet: this build runs applications in local mode only (ember submit --master local[N])"
        );
        return ExitCode::from(2);
    }
    match cli.command {
        Some(Command::Submit(args)) => submit(args),
        Some(Command::Gen(GenCommand::Views {
            rows,
            files,
            out,
            seed,
            day,
            videos,
            force,
        })) => {
            let spec = ViewsSpec {
                rows,
                files,
                out,
                seed,
                day,
                videos,
                force,
            };
            match generate_views(&spec) {
                Ok(paths) => {
                    eprintln!(
                        "wrote {rows} rows in {} files to {}",
                        paths.len(),
                        spec.out.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        Some(Command::Certs(command)) => match certs(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e.to_string()),
        },
        Some(Command::ProbeNode(args)) => {
            let options = match node_options(&args.conf) {
                Ok(options) => options,
                Err(e) => {
                    eprintln!("ember: {e}");
                    return ExitCode::from(2);
                }
            };
            match crate::probe::serve(&args.certs, &args.name, args.listen, options, args.burn) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e.to_string()),
            }
        }
        Some(Command::Config { .. }) => {
            print_config();
            ExitCode::SUCCESS
        }
        None => {
            eprintln!(
                "error: give a command (submit, gen, certs, config) or --role; see `ember --help`"
            );
            ExitCode::from(2)
        }
    }
}

/// Transport settings from `EMBER_*` variables and `--conf` pairs.
fn node_options(pairs: &[String]) -> Result<ember_transport::NodeOptions, ConfigError> {
    let mut conf = EmberConf::new().with_env(std::env::vars())?;
    for pair in pairs {
        conf.set_pair(pair)?;
    }
    conf.node_options()
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn certs(command: CertsCommand) -> Result<(), ember_certs::CertError> {
    match command {
        CertsCommand::Init {
            dir,
            name,
            days,
            force,
        } => {
            let cert = ember_certs::init_ca(&dir, &name, days, force)?;
            eprintln!(
                "made the cluster CA {} (key {}, readable by you only); keep the key off worker nodes",
                cert.display(),
                dir.join(ember_certs::CA_KEY).display()
            );
        }
        CertsCommand::Issue {
            dir,
            role,
            name,
            hosts,
            days,
        } => {
            let request = ember_certs::IssueRequest::new(role, &name, hosts, days);
            let issued = ember_certs::issue(&dir, &request)?;
            eprintln!(
                "issued {role} certificate {} (key {})",
                issued.cert.display(),
                issued.key.display()
            );
        }
        CertsCommand::Show { file } => {
            let der = ember_certs::read_cert(&file)?;
            println!(
                "{}",
                ember_certs::inspect(&der, &file.display().to_string())?
            );
        }
    }
    Ok(())
}

fn print_config() {
    println!("Configuration keys (set with --conf KEY=VALUE or the environment variable shown):\n");
    for key in KEYS {
        let default = if key.default.is_empty() {
            "(depends on the master)"
        } else {
            key.default
        };
        println!(
            "{}\n    default: {default}\n    env:     {}\n    {}\n",
            key.name,
            env_name(key.name),
            key.doc
        );
    }
    println!("Keys starting with `datafusion.` are passed to DataFusion unchanged.");
}

fn submit(args: SubmitArgs) -> ExitCode {
    if args.deploy_mode == DeployMode::Cluster {
        return fail(
            "--deploy-mode cluster needs a cluster master; local masters run the driver in this process (client mode)",
        );
    }
    let script = match std::fs::read_to_string(&args.job) {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot read job file {}: {e}", args.job.display())),
    };
    let statements = split_statements(&script);
    if statements.is_empty() {
        return fail(&format!("{} has no SQL statements", args.job.display()));
    }
    let mut conf = match EmberConf::new().with_env(std::env::vars()) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    for pair in &args.conf {
        if let Err(e) = conf.set_pair(pair) {
            return fail(&e.to_string());
        }
    }
    let on_terminal = std::io::stdout().is_terminal();
    let format = args.format.unwrap_or(if on_terminal {
        OutputFormat::Table
    } else {
        OutputFormat::Csv
    });
    let listener: Option<Arc<dyn JobListener>> = (on_terminal && std::io::stderr().is_terminal())
        .then(|| Arc::new(ConsoleProgress::new()) as Arc<dyn JobListener>);
    let options = SessionOptions {
        master: args.master,
        conf,
        listener,
    };
    let app = args
        .name
        .clone()
        .unwrap_or_else(|| args.job.display().to_string());
    tracing::info!(%app, master = %args.master, "submitting");
    let mode = if args.explain {
        Mode::ExplainOnly
    } else {
        Mode::Run
    };
    let job = args.job.display().to_string();
    let system = actix::System::new();
    system.block_on(async move {
        let mut session = match Session::start(options).await {
            Ok(s) => s,
            Err(e) => return fail(&e.to_string()),
        };
        let code = run_statements(&mut session, &job, &statements, mode, format, on_terminal).await;
        session.stop().await;
        code
    })
}

enum PrintError {
    Closed,
    Other(ArrowError),
}

impl From<ArrowError> for PrintError {
    fn from(e: ArrowError) -> Self {
        match &e {
            ArrowError::IoError(_, io) if io.kind() == std::io::ErrorKind::BrokenPipe => {
                PrintError::Closed
            }
            _ => PrintError::Other(e),
        }
    }
}

async fn run_statements(
    session: &mut Session,
    job: &str,
    statements: &[ScriptStatement],
    mode: Mode,
    format: OutputFormat,
    on_terminal: bool,
) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    for statement in statements {
        let started = std::time::Instant::now();
        let printed = match session.execute_in(&statement.text, mode).await {
            Ok(StatementOutcome::Rows(rows)) => write_rows(&mut stdout, format, &rows)
                .map(|()| Some(rows.num_rows()))
                .map_err(PrintError::from),
            Ok(StatementOutcome::Explain(text)) => writeln!(stdout, "{text}")
                .map(|()| None)
                .map_err(|e| PrintError::from(ArrowError::from(e))),
            Ok(StatementOutcome::Done) => Ok(None),
            Err(e) => {
                let _ = stdout.flush();
                return fail(&format!(
                    "{job}:{}: statement {} ({}) failed:\n  {e}",
                    statement.line,
                    statement.index,
                    statement.summary()
                ));
            }
        };
        match printed {
            Ok(Some(rows)) if on_terminal && format == OutputFormat::Table => {
                let plural = if rows == 1 { "" } else { "s" };
                let _ = writeln!(
                    stdout,
                    "{rows} row{plural} in {:.3} s\n",
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(_) => {}
            // The reader went away (`| head`): nothing more to print.
            Err(PrintError::Closed) => return ExitCode::SUCCESS,
            Err(PrintError::Other(e)) => return fail(&format!("cannot print results: {e}")),
        }
    }
    let _ = stdout.flush();
    ExitCode::SUCCESS
}
