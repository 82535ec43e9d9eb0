//! The `ember` command line: `--role` for cluster processes, subcommands for
//! people (`submit`, `gen`, `config`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use datafusion::arrow::error::ArrowError;
use ember_actors::cluster_manager::AppRequest;
use ember_actors::config::{ConfigError, KEYS, env_name};
use ember_actors::{EmberConf, JobListener};
use ember_certs::shell_word;
use ember_engine::script::{ScriptStatement, split_statements};

use crate::datagen::{ViewsSpec, generate_views};
use crate::output::{Limits, OutputFormat, footer, reader_gone, write_stream};
use crate::progress::ConsoleProgress;
use crate::tpch::TpchSpec;
use ember_session::master::Master;
use ember_session::{
    ClusterSettings, Flow, Mode, ScriptError, Session, SessionOptions, SinkError, StatementOutcome,
    run_script,
};

#[derive(Debug, Parser)]
#[command(
    name = "ember",
    version,
    about = "Run Spark-style SQL applications on a driver and executors",
    long_about = None,
    args_conflicts_with_subcommands = true,
    override_usage = "ember <COMMAND> [OPTIONS]\n       ember --role <ROLE> [OPTIONS]",
    after_help = "Examples:\n  ember submit examples/watch_time.sql\n  ember shell --master local[2]\n  ember submit --master local[3] --format csv examples/watch_time.sql\n  ember gen views --rows 10000000 --files 8 --out /tmp/views\n  ember gen tpch --scale 1 --out /tmp/tpch && ember submit /tmp/tpch/queries/q05.sql"
)]
pub struct Cli {
    /// Run as a cluster process instead of a command.
    #[arg(long, value_enum, value_name = "ROLE")]
    pub role: Option<Role>,

    #[command(flatten)]
    pub process: ProcessArgs,

    /// More log output: -v for info, -vv for debug (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Options of the cluster processes (`--role ...`).
#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// cluster-manager: the address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7077")]
    pub listen: std::net::SocketAddr,
    /// Directory with the cluster CA and this node's certificate.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CERTS, env = "EMBER_CERTS")]
    pub certs: PathBuf,
    /// The certificate to use (default: the only one of the role in --certs).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// cluster-manager: where submissions and applications are journaled.
    #[arg(long, value_name = "DIR", default_value = "cm-state")]
    pub state_dir: PathBuf,
    /// cluster-manager: start with an empty journal, forgetting every
    /// application and submission (the old journal is moved aside).
    #[arg(long)]
    pub discard_journal: bool,
    /// worker: the cluster manager's HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub cluster_manager: Option<String>,
    /// worker: cores to offer [default: all].
    #[arg(long, value_name = "N")]
    pub cores: Option<u32>,
    /// worker: memory to offer, as 512m or 4g [default: all but 1g].
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// worker: where executors and drivers keep their files and logs.
    #[arg(long, value_name = "DIR", default_value = "work")]
    pub work_dir: PathBuf,
    /// worker: the host its executors listen on (its certificate must name it).
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// A configuration property (repeatable); see `ember config --list`.
    #[arg(long = "conf", short = 'c', value_name = "KEY=VALUE")]
    pub conf: Vec<String>,
    /// executor (set by its worker): the application it serves.
    #[arg(long, hide = true)]
    pub app: Option<String>,
    /// executor (set by its worker): its number in the application.
    #[arg(long, hide = true)]
    pub executor: Option<u32>,
    /// driver (set by its worker): the submission it runs.
    #[arg(long, hide = true)]
    pub driver_id: Option<String>,
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
    /// Run a job: a SQL script of statements separated by ';', or an application's binary.
    Submit(SubmitArgs),
    /// An interactive SQL shell whose driver is this process; with -e or
    /// piped input, runs the statements as submit does.
    Shell(crate::shell::ShellArgs),
    /// Generate sample data sets.
    #[command(subcommand)]
    Gen(GenCommand),
    /// Manage the cluster's certificates (its CA and each node's).
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Show a cluster's workers, applications and drivers, or one of them.
    Status(StatusArgs),
    /// List a cluster's applications and submissions, finished ones too.
    List(ClusterArgs),
    /// Kill a submission's driver or an application (and its executors).
    Kill(IdArgs),
    /// Print the output and log of a cluster-mode submission.
    Logs(LogsArgs),
    /// Start a cluster manager and workers on this machine, as child
    /// processes, until Ctrl-C.
    LocalCluster(crate::local_cluster::LocalClusterArgs),
    /// Show configuration keys, their defaults and meaning.
    Config {
        /// List every key.
        #[arg(long)]
        list: bool,
    },
    /// Run seeded fault-injection simulations of a whole cluster in this
    /// process and report any broken promise with a seed to replay.
    Simulate(crate::simulate::SimulateArgs),
    /// Run seeded random SQL on Ember and on plain DataFusion and report
    /// every query whose answers differ, minimized, with a seed to replay
    /// (-v prints every query).
    FuzzSql(crate::fuzz_sql::FuzzSqlArgs),
    /// Run a bare node with a probe actor until standard input closes
    /// (transport checks and benchmarks).
    #[command(hide = true)]
    ProbeNode(ProbeNodeArgs),
}

/// Where certificates are looked for unless `--certs` says.
pub const DEFAULT_CERTS: &str = "certs";

/// How a command reaches a cluster.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// The cluster manager: ember://HOST:PORT.
    #[arg(long, value_name = "MASTER_URL", env = "EMBER_MASTER")]
    pub master: Master,
    /// Directory with the cluster CA and a client certificate.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CERTS, env = "EMBER_CERTS")]
    pub certs: PathBuf,
    /// The client certificate to use (default: the only one in --certs).
    #[arg(long = "cert-name", value_name = "NAME")]
    pub name: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

impl ClusterArgs {
    /// The options that reach this cluster again, for a command a person
    /// can paste: `--master`, and `--certs` and `--cert-name` unless they
    /// are the defaults.
    pub fn reach_again(&self) -> String {
        let mut options = format!("--master {}", shell_word(&self.master.to_string()));
        if self.certs != std::path::Path::new(DEFAULT_CERTS) {
            options.push_str(" --certs ");
            options.push_str(&shell_word(&self.certs.display().to_string()));
        }
        if let Some(name) = &self.name {
            options.push_str(" --cert-name ");
            options.push_str(&shell_word(name));
        }
        options
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A submission or application id; without one, the whole cluster.
    pub id: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// A submission (driver-...) or application (app-...) id.
    pub id: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// A submission id (driver-...).
    pub id: String,
    /// Print its log (stderr) instead of its output.
    #[arg(long)]
    pub stderr: bool,
    /// At most this many bytes, from the end.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_bytes: u64,
    #[command(flatten)]
    pub cluster: ClusterArgs,
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
    /// The SQL script to run (DataFusion SQL: CREATE EXTERNAL TABLE, SELECT, COPY ... TO, EXPLAIN;
    /// `-` reads it from standard input), or an application's binary (a Rust program built on
    /// the `ember` library).
    #[arg(value_name = "JOB_FILE")]
    pub job: PathBuf,

    /// An application binary's own arguments, after `--`.
    #[arg(last = true, value_name = "APP_ARGS")]
    pub app_args: Vec<String>,

    #[command(flatten)]
    pub app: AppArgs,

    /// Where the driver runs: `client` (in this process) or, on a cluster,
    /// `cluster` (on a worker; this command returns a submission id).
    #[arg(long, value_enum, value_name = "MODE", default_value = "client")]
    pub deploy_mode: DeployMode,

    /// Cores for a cluster-mode driver.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one())]
    pub driver_cores: u32,

    /// Cluster mode: restart the driver when it exits with a failure.
    #[arg(long)]
    pub supervise: bool,

    /// How rows are printed [default: table on a terminal, csv otherwise].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<OutputFormat>,

    /// Show each query's stage graph instead of running it.
    #[arg(long)]
    pub explain: bool,
}

/// Where and how an application runs: the options `submit` and `shell`
/// share.
#[derive(Debug, Args)]
pub struct AppArgs {
    /// Where to run: local, local[N], local[*], local[N,F] (F: attempts per
    /// task), or ember://HOST:PORT for a cluster.
    #[arg(
        long,
        value_name = "MASTER_URL",
        default_value = "local[*]",
        env = "EMBER_MASTER"
    )]
    pub master: Master,

    /// Cores per executor (cluster masters).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one())]
    pub executor_cores: u32,

    /// Memory per executor, as 512m or 2g (cluster masters): its tasks
    /// share it and spill to disk beyond it.
    #[arg(long, value_name = "SIZE", default_value = "1g")]
    pub executor_memory: String,

    /// Memory for the driver. In local mode, the budget all tasks share
    /// (they spill to disk beyond it) [default: half the machine's
    /// memory]; for a cluster-mode driver, what its worker sets aside
    /// [default: 1g].
    #[arg(long, value_name = "SIZE")]
    pub driver_memory: Option<String>,

    /// Cores for all executors together [default: every free core].
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "num_executors",
        value_parser = at_least_one()
    )]
    pub total_executor_cores: Option<u32>,

    /// Executors to ask for (each with --executor-cores).
    #[arg(long, value_name = "N", value_parser = at_least_one())]
    pub num_executors: Option<u32>,

    /// Client mode on a cluster: the host executors reach this driver at
    /// (the client certificate must name it).
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    pub driver_host: String,

    /// Directory with the cluster CA and a client certificate.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CERTS, env = "EMBER_CERTS")]
    pub certs: PathBuf,

    /// The client certificate to use (default: the only one in --certs).
    #[arg(long = "cert-name", value_name = "NAME")]
    pub cert_name: Option<String>,

    /// A name for the application, shown in logs.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// A configuration property (repeatable); see `ember config --list`.
    #[arg(long = "conf", short = 'c', value_name = "KEY=VALUE")]
    pub conf: Vec<String>,

    /// Side files, separated by commas (repeatable): put in every
    /// executor's work dir (and a cluster-mode driver's) under their own
    /// names; SQL reads them as files:///NAME.
    #[arg(long, value_name = "FILE,...", value_delimiter = ',')]
    pub files: Vec<PathBuf>,
}

/// Cores and executors are counted from one: a request for none could
/// never start, so it is refused before anything is sent.
fn at_least_one() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..)
}

impl AppArgs {
    /// Settings from `EMBER_*` variables, then `--conf` pairs.
    pub fn conf(&self) -> Result<EmberConf, String> {
        let mut conf = EmberConf::new()
            .with_env(std::env::vars())
            .map_err(|e| e.to_string())?;
        if let Some(memory) = &self.driver_memory {
            conf.set(ember_actors::config::DRIVER_MEMORY, memory)
                .map_err(|_| {
                    format!("--driver-memory must be a size such as 512m or 2g, not '{memory}'")
                })?;
        }
        for pair in &self.conf {
            conf.set_pair(pair).map_err(|e| e.to_string())?;
        }
        Ok(conf)
    }

    /// What to ask a cluster for; `name` unless `--name` is given.
    pub fn request(&self, name: &str) -> Result<AppRequest, String> {
        let executor_memory_mb = ember_session::setup::parse_memory_mb(&self.executor_memory)
            .map_err(|e| format!("--executor-memory: {e}"))?;
        if self.executor_cores == 0 {
            return Err("--executor-cores must be at least 1".into());
        }
        let max_cores = self.total_executor_cores.or(self
            .num_executors
            .map(|n| n.saturating_mul(self.executor_cores)));
        Ok(AppRequest {
            name: self.name.clone().unwrap_or_else(|| name.to_string()),
            executor_cores: self.executor_cores,
            executor_memory_mb,
            max_cores,
            conf: vec![],
            binary: None,
            files: vec![],
        })
    }

    /// These options as `ember submit` flags, for an application binary
    /// that reads them back (`EMBER_APP_ARGS`).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--master={}", self.master),
            format!("--executor-cores={}", self.executor_cores),
            format!("--executor-memory={}", self.executor_memory),
            format!("--driver-host={}", self.driver_host),
            format!("--certs={}", self.certs.display()),
        ];
        let optional = [
            (
                "total-executor-cores",
                self.total_executor_cores.map(|n| n.to_string()),
            ),
            ("num-executors", self.num_executors.map(|n| n.to_string())),
            ("driver-memory", self.driver_memory.clone()),
            ("cert-name", self.cert_name.clone()),
            ("name", self.name.clone()),
        ];
        for (flag, value) in optional {
            if let Some(value) = value {
                args.push(format!("--{flag}={value}"));
            }
        }
        args.extend(self.conf.iter().map(|pair| format!("--conf={pair}")));
        args.extend(self.files.iter().map(|file| {
            let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            format!("--files={}", file.display())
        }));
        args
    }

    /// How a client-mode driver in this process joins a cluster master;
    /// `None` for local masters.
    pub fn cluster_settings(
        &self,
        request: AppRequest,
        instance: String,
    ) -> Option<ClusterSettings> {
        matches!(self.master, Master::Cluster { .. }).then(|| ClusterSettings {
            certs: self.certs.clone(),
            cert_name: self.cert_name.clone(),
            role: ember_certs::Role::Client,
            instance,
            driver_host: self.driver_host.clone(),
            request,
            submission: None,
            binary: crate::client::app_binary_path(),
        })
    }
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
        #[arg(long, default_value_t = ember_certs::DEFAULT_CA_DAYS, value_parser = parse_days)]
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
        #[arg(long, default_value_t = ember_certs::DEFAULT_NODE_DAYS, value_parser = parse_days)]
        days: u32,
    },
    /// Print a certificate's subject, role, hosts and validity.
    Show {
        /// A PEM certificate file.
        file: PathBuf,
    },
}

/// The longest validity `--days` takes: a hundred years.
const MAX_DAYS: u32 = 36_500;

/// `--days`: a certificate valid for no day would be expired when issued.
fn parse_days(value: &str) -> Result<u32, String> {
    let days: u32 = value
        .parse()
        .map_err(|_| format!("'{value}' is not a number of days"))?;
    match days {
        0 => Err(
            "a certificate must be valid for at least 1 day; one of 0 days would be expired as soon as it is issued"
                .to_string(),
        ),
        1..=MAX_DAYS => Ok(days),
        _ => Err(format!("at most {MAX_DAYS} days (100 years)")),
    }
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
    /// The eight TPC-H tables as Parquet (DIR/lineitem/part-0.parquet, ...),
    /// DIR/tables.sql registering them, and the 22 queries as scripts
    /// (DIR/queries/q01.sql, ...) that `ember submit` runs as they are.
    Tpch {
        /// Scale factor: 1 is about 1 GB of data, 6 million lineitem rows.
        #[arg(long, value_name = "SF", default_value_t = 1.0)]
        scale: f64,
        /// Directory to write into (must be empty, unless --force).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Parquet files per table (nation and region always have one).
        #[arg(long, value_name = "N", default_value_t = 4)]
        files: usize,
        /// Replace the tables and queries already in DIR.
        #[arg(long)]
        force: bool,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A simulation's injected faults would each log a warning: quiet
    // unless asked.
    let quiet = matches!(cli.command, Some(Command::Simulate(_)));
    // The fuzzer's -v prints its queries; Ember's own logs (every failed
    // task is a warning) need one -v more.
    let fuzzing = matches!(cli.command, Some(Command::FuzzSql(_)));
    let log_level = if fuzzing {
        cli.verbose.saturating_sub(1)
    } else {
        cli.verbose
    };
    init_logging(log_level, quiet || (fuzzing && cli.verbose == 0), quiet);
    if let Some(role) = cli.role {
        return run_role(role, cli.process);
    }
    match cli.command {
        Some(Command::Status(args)) => crate::client::status(args),
        Some(Command::List(args)) => crate::client::list(args),
        Some(Command::Kill(args)) => crate::client::kill(args),
        Some(Command::Logs(args)) => crate::client::logs(args),
        Some(Command::LocalCluster(args)) => crate::local_cluster::run(args),
        Some(Command::Submit(args)) => submit(args),
        Some(Command::Shell(args)) => crate::shell::run(args),
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
                    errln!(
                        "wrote {rows} rows in {} files to {}",
                        paths.len(),
                        spec.out.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        Some(Command::Gen(GenCommand::Tpch {
            scale,
            out,
            files,
            force,
        })) => gen_tpch(&TpchSpec {
            scale,
            files,
            out,
            force,
        }),
        Some(Command::Certs(command)) => match certs(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e.to_string()),
        },
        Some(Command::ProbeNode(args)) => {
            let options = match node_options(&args.conf) {
                Ok(options) => options,
                Err(e) => {
                    errln!("ember: {e}");
                    return ExitCode::from(2);
                }
            };
            match crate::probe::serve(&args.certs, &args.name, args.listen, options, args.burn) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e.to_string()),
            }
        }
        Some(Command::Simulate(args)) => crate::simulate::run(args),
        Some(Command::FuzzSql(args)) => crate::fuzz_sql::run(args, cli.verbose > 0),
        Some(Command::Config { .. }) => {
            print_config();
            ExitCode::SUCCESS
        }
        None => {
            errln!(
                "error: give a command (submit, shell, status, list, kill, logs, local-cluster, simulate, gen, certs, config) or --role; see `ember --help`"
            );
            ExitCode::from(2)
        }
    }
}

/// `ember gen tpch`, with a progress bar on a terminal.
fn gen_tpch(spec: &TpchSpec) -> ExitCode {
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(crate::tpch::expected_rows(spec.scale));
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "TPC-H SF {msg} [{bar:30}] {human_pos}/{human_len} rows, {elapsed} so far, {eta} left",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(spec.scale.to_string());
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let generated = crate::tpch::generate(spec, &|rows| bar.inc(rows));
    bar.finish_and_clear();
    match generated {
        Ok(done) => {
            errln!(
                "wrote TPC-H scale factor {} ({} rows in {} Parquet files) to {}\n\
                 tables: {}\n\
                 run a query: ember submit {}",
                spec.scale,
                done.rows,
                done.files,
                done.dir.display(),
                done.dir.join("tables.sql").display(),
                done.dir.join("queries").join("q01.sql").display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

/// Runs this process as a cluster role.
fn run_role(role: Role, args: ProcessArgs) -> ExitCode {
    let conf: Result<Vec<(String, String)>, String> = args
        .conf
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("'{pair}' is not of the form key=value"))
        })
        .collect();
    let conf = match conf {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    match role {
        Role::ClusterManager => ember_runtime::run_cluster_manager(ember_runtime::ManagerArgs {
            listen: args.listen,
            certs: args.certs,
            name: args.name,
            state_dir: args.state_dir,
            discard_journal: args.discard_journal,
            conf,
        }),
        Role::Worker => {
            let Some(manager) = args.cluster_manager else {
                return fail("a worker needs --cluster-manager HOST:PORT");
            };
            let memory_mb = match args
                .memory
                .as_deref()
                .map(ember_session::setup::parse_memory_mb)
            {
                None => ember_runtime::default_worker_memory_mb(),
                Some(Ok(mb)) => mb,
                Some(Err(e)) => return fail(&format!("--memory: {e}")),
            };
            let cores = args.cores.unwrap_or_else(|| {
                u32::try_from(ember_session::master::available_cores()).unwrap_or(1)
            });
            if cores == 0 {
                return fail("--cores must be at least 1");
            }
            ember_runtime::run_worker(ember_runtime::WorkerArgs {
                manager,
                certs: args.certs,
                name: args.name,
                host: args.host,
                cores,
                memory_mb,
                work_dir: args.work_dir,
                conf,
            })
        }
        Role::Executor => ember_runtime::run_executor(&ember_engine::Functions::new()),
        Role::Driver => run_cluster_driver(),
    }
}

/// `ember --role driver`: a cluster-mode driver a worker started, with its
/// job on stdin; its output goes to the worker's log files.
fn run_cluster_driver() -> ExitCode {
    let launch = match ember_runtime::launched() {
        Ok(launch) => launch,
        Err(e) => return fail(&e),
    };
    let statements = split_statements(&launch.job.script);
    errln!("driver {} running {}", launch.driver, launch.job.name);
    run_job(
        launch.options,
        &launch.job.name,
        &statements,
        Mode::Run,
        OutputFormat::Csv,
        false,
    )
}

/// How long an interrupted job may take to end its own way.
pub(crate) const CANCEL_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts a session, runs `statements`, and ends the application.
fn run_job(
    options: SessionOptions,
    job: &str,
    statements: &[ScriptStatement],
    mode: Mode,
    format: OutputFormat,
    on_terminal: bool,
) -> ExitCode {
    let system = actix::System::new();
    system.block_on(async move {
        let (mut session, mut interrupt) = match start_session(options).await {
            Ok(started) => started,
            Err(code) => return code,
        };
        let cancel = session.canceller();
        let run = run_statements(&mut session, job, statements, mode, format, on_terminal);
        let code = until_interrupted(run, &cancel, &mut interrupt)
            .await
            .unwrap_or(ExitCode::from(130));
        let failure = (code != ExitCode::SUCCESS).then(|| format!("the job stopped with {code:?}"));
        session.stop_with(failure).await;
        code
    })
}

/// Runs `work` to its end, or until Ctrl-C: then its job is cancelled
/// (its tasks are killed and its statement ends its own way, so
/// half-written output is cleaned up), it gets [`CANCEL_GRACE`] to end,
/// and the answer is `None`.
pub(crate) async fn until_interrupted<T>(
    work: impl std::future::Future<Output = T>,
    cancel: &impl Fn(&str),
    interrupt: &mut Option<tokio::signal::unix::Signal>,
) -> Option<T> {
    tokio::pin!(work);
    tokio::select! {
        done = &mut work => Some(done),
        _ = interrupted(interrupt) => {
            errln!("interrupted; cancelling the running job");
            cancel("interrupted (Ctrl-C)");
            let _ = tokio::time::timeout(CANCEL_GRACE, &mut work).await;
            None
        }
    }
}

/// Starts a session with Ctrl-C caught from the start: Ctrl-C while
/// executors are still joining must not leave the process without a word
/// to its cluster. Returns the session and the SIGINT stream to watch, or
/// the exit code to end with.
pub(crate) async fn start_session(
    options: SessionOptions,
) -> Result<(Session, Option<tokio::signal::unix::Signal>), ExitCode> {
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    let started = tokio::select! {
        started = Session::start(options) => started,
        _ = interrupted(&mut interrupt) => {
            errln!("interrupted while starting");
            return Err(ExitCode::from(130));
        }
    };
    match started {
        Ok(session) => Ok((session, interrupt)),
        Err(e) => Err(fail(&e.to_string())),
    }
}

/// Resolves at the next SIGINT (never, if it could not be caught).
pub(crate) async fn interrupted(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
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

pub(crate) fn fail(message: &str) -> ExitCode {
    errln!("error: {message}");
    ExitCode::FAILURE
}

/// Log lines of a simulation carry its virtual time, as its trace does.
struct VirtualTime;

impl tracing_subscriber::fmt::time::FormatTime for VirtualTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match ember_simulations::world::virtual_time() {
            Some(at) => write!(w, "{:>7}ms", at.as_millis()),
            None => write!(w, "      -  "),
        }
    }
}

pub(crate) fn init_logging(verbose: u8, quiet: bool, simulating: bool) {
    let default = match verbose {
        0 if quiet => "off",
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never in files or pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log line that cannot be written (standard error closed) is
        // dropped; reporting that on standard error would panic.
        .log_internal_errors(false);
    let _ = if simulating {
        logs.with_timer(VirtualTime).try_init()
    } else {
        logs.try_init()
    };
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
            errln!(
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
            errln!(
                "issued {role} certificate {} (key {})",
                issued.cert.display(),
                issued.key.display()
            );
        }
        CertsCommand::Show { file } => {
            let der = ember_certs::read_cert(&file)?;
            outln!(
                "{}",
                ember_certs::inspect(&der, &file.display().to_string())?
            );
        }
    }
    Ok(())
}

fn print_config() {
    outln!("Configuration keys (set with --conf KEY=VALUE or the environment variable shown):\n");
    for key in KEYS {
        let default = if key.default.is_empty() {
            "(depends on the master)"
        } else {
            key.default
        };
        outln!(
            "{}\n    default: {default}\n    env:     {}\n    {}\n",
            key.name,
            env_name(key.name),
            key.doc
        );
    }
    outln!("Keys starting with `datafusion.` are passed to DataFusion unchanged.");
}

fn submit(args: SubmitArgs) -> ExitCode {
    let on_cluster = matches!(args.app.master, Master::Cluster { .. });
    if args.deploy_mode == DeployMode::Cluster && !on_cluster {
        return fail(
            "--deploy-mode cluster needs a cluster master (--master ember://HOST:PORT); local masters run the driver in this process (client mode)",
        );
    }
    // A script may come through a pipe (`-`, `/dev/stdin`, a process
    // substitution): it is read once, whole, and never sniffed first, since
    // a pipe gives its bytes only once.
    let stdin = args.job.as_os_str() == "-";
    let piped = stdin || std::fs::metadata(&args.job).is_ok_and(|m| !m.is_file() && !m.is_dir());
    if !piped && ember_actors::binaries::is_elf(&args.job) {
        return crate::app::submit(args);
    }
    if !args.app_args.is_empty() {
        return fail(&format!(
            "{} is a SQL script; arguments after -- are for an application binary",
            args.job.display()
        ));
    }
    let read = if stdin {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| text)
    } else {
        std::fs::read_to_string(&args.job)
    };
    let script = match read {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData && piped => {
            return fail(&format!(
                "{} is not a SQL script (not UTF-8 text); an application binary is submitted \
                 from a file, not a pipe",
                args.job.display()
            ));
        }
        Err(e) => return fail(&format!("cannot read job file {}: {e}", args.job.display())),
    };
    let statements = split_statements(&script);
    if statements.is_empty() {
        return fail(&format!("{} has no SQL statements", args.job.display()));
    }
    let (conf, request) = match args.app.conf().and_then(|conf| {
        let name = if stdin {
            "stdin".to_string()
        } else {
            args.job.display().to_string()
        };
        Ok((conf, args.app.request(&name)?))
    }) {
        Ok(parts) => parts,
        Err(e) => return fail(&e),
    };
    let app = request.name.clone();
    if on_cluster {
        let missing = ember_session::missing_locations(&script);
        if let Some((table, location)) = missing.first() {
            return fail(&format!(
                "{}: table {table}: LOCATION '{location}' does not exist; fix the path or create it first",
                args.job.display()
            ));
        }
    }
    if args.deploy_mode == DeployMode::Cluster {
        return submit_cluster_mode(&args, script, None);
    }
    let on_terminal = std::io::stdout().is_terminal();
    let format = args.format.unwrap_or(if on_terminal {
        OutputFormat::Table
    } else {
        OutputFormat::Csv
    });
    let options = SessionOptions {
        master: args.app.master.clone(),
        conf,
        functions: ember_engine::Functions::new(),
        listener: console_progress(),
        files: args.app.files.clone(),
        cluster: args
            .app
            .cluster_settings(request, format!("submit-{}", std::process::id())),
    };
    tracing::info!(%app, master = %args.app.master, "submitting");
    let mode = if args.explain {
        Mode::ExplainOnly
    } else {
        Mode::Run
    };
    let job = args.job.display().to_string();
    run_job(options, &job, &statements, mode, format, on_terminal)
}

/// Hands a job to a cluster-mode driver: `script`, or with `binary` an
/// application binary run with `args.app_args`.
pub(crate) fn submit_cluster_mode(
    args: &SubmitArgs,
    script: String,
    binary: Option<&std::path::Path>,
) -> ExitCode {
    let prepared = args.app.conf().and_then(|conf| {
        let request = args.app.request(&args.job.display().to_string())?;
        let driver_memory = args.app.driver_memory.as_deref().unwrap_or("1g");
        let driver_memory_mb = ember_session::setup::parse_memory_mb(driver_memory)
            .map_err(|e| format!("--driver-memory: {e}"))?;
        Ok((conf, request, driver_memory_mb))
    });
    let (conf, request, driver_memory_mb) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => return fail(&e),
    };
    let job = ember_actors::cluster_manager::DriverJob {
        name: request.name,
        script,
        conf: conf.pairs(),
        executor_cores: request.executor_cores,
        executor_memory_mb: request.executor_memory_mb,
        max_cores: request.max_cores,
        args: args.app_args.clone(),
        base_dir: std::env::current_dir()
            .ok()
            .map(|d| d.display().to_string()),
        binary: None,
        files: vec![],
    };
    let driver = ember_actors::cluster_manager::DriverRequest {
        cores: args.driver_cores.max(1),
        memory_mb: driver_memory_mb,
        supervise: args.supervise,
    };
    let cluster = ClusterArgs {
        master: args.app.master.clone(),
        certs: args.app.certs.clone(),
        name: args.app.cert_name.clone(),
        json: false,
    };
    crate::client::submit_cluster(&cluster, job, driver, binary, &args.app.files)
}

/// Stage progress bars on the console, when both outputs are terminals.
pub(crate) fn console_progress() -> Option<Arc<dyn JobListener>> {
    (std::io::stdout().is_terminal() && std::io::stderr().is_terminal())
        .then(|| Arc::new(ConsoleProgress::new()) as Arc<dyn JobListener>)
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
    let ran = run_script(
        session,
        job,
        statements,
        mode,
        async |_, outcome, started| {
            let written = |e: std::io::Error| SinkError::Sink(ArrowError::from(e));
            let rows = match outcome {
                StatementOutcome::Rows(mut rows) => {
                    write_stream(&mut stdout, format, &mut rows, Limits::default())
                        .await?
                        .1
                }
                StatementOutcome::Explain(text) => {
                    writeln!(stdout, "{text}").map_err(written)?;
                    return Ok(Flow::Continue);
                }
                StatementOutcome::Done => return Ok(Flow::Continue),
            };
            if on_terminal && format == OutputFormat::Table {
                let rows = usize::try_from(rows).unwrap_or(usize::MAX);
                writeln!(stdout, "{}\n", footer(rows, Some(started.elapsed()))).map_err(written)?;
            }
            Ok(Flow::Continue)
        },
    )
    .await;
    let _ = stdout.flush();
    match ran {
        Ok(_) => ExitCode::SUCCESS,
        Err(ScriptError::Statement(failed)) => fail(&failed.to_string()),
        // The reader went away (`| head`): nothing more to print.
        Err(ScriptError::Sink(e)) if reader_gone(&e) => ExitCode::SUCCESS,
        Err(ScriptError::Sink(e)) => fail(&format!("cannot print results: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(certs: &str, name: Option<&str>) -> ClusterArgs {
        ClusterArgs {
            master: "ember://10.0.0.5:7077".parse().unwrap(),
            certs: PathBuf::from(certs),
            name: name.map(str::to_string),
            json: false,
        }
    }

    #[test]
    fn a_pasted_command_reaches_the_same_cluster_with_the_same_certificates() {
        assert_eq!(
            cluster(DEFAULT_CERTS, None).reach_again(),
            "--master ember://10.0.0.5:7077"
        );
        assert_eq!(
            cluster("/etc/ember/pki", Some("ops")).reach_again(),
            "--master ember://10.0.0.5:7077 --certs /etc/ember/pki --cert-name ops"
        );
        assert_eq!(
            cluster("my certs/it's", None).reach_again(),
            r"--master ember://10.0.0.5:7077 --certs 'my certs/it'\''s'"
        );
    }
}
