//! Packaged applications: a Rust program that registers its own functions
//! and runs SQL or DataFrames through a [`Session`] is an Ember application
//! when its `main` hands itself to [`App::run`]. `ember submit` runs such a
//! binary as the driver (local and client mode) or has a worker run it
//! (cluster mode), and workers run it as the application's executors, so
//! its functions resolve wherever its plans run.
//!
//! ```no_run
//! use ember::{App, Functions};
//!
//! fn main() -> std::process::ExitCode {
//!     App::new("my-app")
//!         .functions(Functions::new())
//!         .run(async |session, args| {
//!             session.execute("SELECT 1").await?;
//!             let _ = args;
//!             Ok(())
//!         })
//! }
//! ```

use std::error::Error;
use std::process::ExitCode;

use clap::Parser;
use ember_engine::Functions;
use ember_session::{Session, SessionOptions};

use crate::cli::{AppArgs, fail, interrupted, start_session, until_interrupted};

/// The variable `ember submit` passes an application's options in: its own
/// `--master`, `--conf`, ... flags, one argument per line.
pub const APP_ARGS_VAR: &str = "EMBER_APP_ARGS";

/// What an application's `main` returns.
pub type AppResult = Result<(), Box<dyn Error + Send + Sync>>;

/// An application: its name and functions.
pub struct App {
    name: String,
    functions: Functions,
}

#[derive(Debug, Parser)]
#[command(name = "application", no_binary_name = true)]
struct Options {
    #[command(flatten)]
    app: AppArgs,
}

impl App {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            functions: Functions::new(),
        }
    }

    /// The application's own functions, for its driver and executors.
    pub fn functions(mut self, functions: Functions) -> Self {
        self.functions = functions;
        self
    }

    /// Runs the application and returns the process's exit code.
    ///
    /// Started by a worker (`--role executor` or `--role driver`), this
    /// serves that role with the application's functions. Otherwise it
    /// starts a session where `ember submit` said (`local[*]` when run by
    /// hand) and calls `main` with it and the arguments given after `--`.
    pub fn run(self, main: impl AsyncFnOnce(&mut Session, Vec<String>) -> AppResult) -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        // Logs as the `ember` binary's: warnings by default, `RUST_LOG` for more.
        crate::cli::init_logging(0, false, false);
        match args.first().map(String::as_str) {
            Some("--role") => self.serve_role(args.get(1).map(String::as_str), main),
            _ => match self.options() {
                Ok(options) => self.drive(options, args, main),
                Err(e) => fail(&e),
            },
        }
    }

    fn serve_role(
        self,
        role: Option<&str>,
        main: impl AsyncFnOnce(&mut Session, Vec<String>) -> AppResult,
    ) -> ExitCode {
        match role {
            Some("executor") => ember_runtime::run_executor(&self.functions),
            Some("driver") => {
                let launch = match ember_runtime::launched() {
                    Ok(launch) => launch,
                    Err(e) => return fail(&e),
                };
                errln!("driver {} running {}", launch.driver, launch.job.name);
                self.drive(launch.options, launch.job.args, main)
            }
            other => fail(&format!(
                "an application binary serves --role executor or --role driver, not {}; \
                 run the cluster with the `ember` binary",
                other.unwrap_or("nothing")
            )),
        }
    }

    /// The session options `ember submit` passed, or a local session's.
    fn options(&self) -> Result<SessionOptions, String> {
        let given = std::env::var(APP_ARGS_VAR).unwrap_or_default();
        let options = Options::try_parse_from(given.lines().filter(|l| !l.is_empty()))
            .map_err(|e| format!("{APP_ARGS_VAR} holds options this build cannot read: {e}"))?;
        let conf = options.app.conf()?;
        let request = options.app.request(&self.name)?;
        let instance = format!("app-{}", std::process::id());
        let mut cluster = options.app.cluster_settings(request, instance);
        if let Some(cluster) = &mut cluster {
            // The executors run this very binary, for its functions.
            let this = std::env::current_exe()
                .map_err(|e| format!("cannot find this application's own binary: {e}"))?;
            cluster.binary = Some(this);
        }
        Ok(SessionOptions {
            master: options.app.master.clone(),
            conf,
            functions: Functions::new(),
            listener: crate::cli::console_progress(),
            files: options.app.files.clone(),
            cluster,
        })
    }

    /// Starts the session, runs `main`, and ends the application the way
    /// `main` went.
    fn drive(
        self,
        mut options: SessionOptions,
        args: Vec<String>,
        main: impl AsyncFnOnce(&mut Session, Vec<String>) -> AppResult,
    ) -> ExitCode {
        options.functions = self.functions;
        let system = actix::System::new();
        system.block_on(async move {
            let (mut session, mut interrupt) = match start_session(options).await {
                Ok(started) => started,
                Err(code) => return code,
            };
            let cancel = session.canceller();
            let run = main(&mut session, args);
            let failure = match until_interrupted(run, &cancel, &mut interrupt).await {
                Some(outcome) => outcome.err().map(|e| e.to_string()),
                None => Some("interrupted (Ctrl-C)".to_string()),
            };
            session.stop_with(failure.clone()).await;
            match failure {
                None => ExitCode::SUCCESS,
                Some(e) => fail(&e),
            }
        })
    }
}

/// `ember submit APP-BINARY -- ARGS`: local and client mode run the binary
/// here as the driver, with this command's options; cluster mode hands it
/// to a worker.
pub fn submit(args: crate::cli::SubmitArgs) -> ExitCode {
    use crate::cli::DeployMode;
    if args.explain {
        return fail(
            "--explain shows a SQL script's stages; an application binary has none to show",
        );
    }
    if args.deploy_mode == DeployMode::Cluster {
        return submit_to_cluster(args);
    }
    let options = args.app.to_args().join("\n");
    let mut command = std::process::Command::new(&args.job);
    command.args(&args.app_args).env(APP_ARGS_VAR, options);
    // The application cannot outlive this command.
    ember_actors::worker::child::die_with_parent(&mut command, libc::SIGTERM);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return fail(&format!("cannot start {}: {e}", args.job.display())),
    };
    // Ctrl-C reaches the application too (one process group): this
    // command waits for it to end its own way instead of dying first.
    let waited = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime.block_on(async {
                let mut interrupt =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
                let mut wait = tokio::task::spawn_blocking(move || child.wait());
                loop {
                    tokio::select! {
                        status = &mut wait => return status.map_err(|e| e.to_string()),
                        _ = interrupted(&mut interrupt) => {}
                    }
                }
            })
        });
    match waited {
        Ok(Ok(status)) => match status.code() {
            Some(0) => ExitCode::SUCCESS,
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => {
                let (_, why) = ember_actors::worker::child::describe_exit(&Ok(status));
                fail(&format!("{} {why}", args.job.display()))
            }
        },
        Ok(Err(e)) => fail(&format!("lost {}: {e}", args.job.display())),
        Err(e) => fail(&format!("cannot wait for {}: {e}", args.job.display())),
    }
}

fn submit_to_cluster(args: crate::cli::SubmitArgs) -> ExitCode {
    crate::cli::submit_cluster_mode(&args, String::new(), Some(&args.job))
}
