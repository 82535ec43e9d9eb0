//! The commands people run against a cluster: `submit --deploy-mode
//! cluster`, `status`, `list`, `kill` and `logs`. Each opens a node with a
//! client certificate, asks the cluster manager, and prints the answer as a
//! table or JSON.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use ember_actors::cluster_manager::{ClusterStatus, DriverJob, DriverRequest};
use ember_client::{ClientError, ClusterClient};

use crate::cli::{ClusterArgs, IdArgs, LogsArgs, StatusArgs, fail};
use ember_session::master::Master;

/// Runs `talk` with a client of the cluster manager named by `args`, over
/// one connection.
fn with_manager<T>(
    args: &ClusterArgs,
    talk: impl AsyncFnOnce(&ClusterClient) -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    let Master::Cluster { host, port } = &args.master else {
        return Err(ClientError::BadRequest(format!(
            "--master {} is a local master; cluster commands need ember://HOST:PORT",
            args.master
        )));
    };
    let creds = ember_session::setup::pick_credentials(
        &args.certs,
        args.name.as_deref(),
        ember_certs::Role::Client,
    )
    .map_err(ClientError::BadRequest)?;
    let addr = ember_session::setup::resolve(host, *port).map_err(ClientError::BadRequest)?;
    let system = actix::System::new();
    system.block_on(async move {
        let instance = format!("cli-{}", std::process::id());
        let client = ClusterClient::connect(&creds, &instance, addr, host).await?;
        let outcome = talk(&client).await;
        client.close().await;
        outcome
    })
}

pub fn submit_cluster(
    args: &ClusterArgs,
    job: DriverJob,
    request: DriverRequest,
    binary: Option<&Path>,
    files: &[std::path::PathBuf],
) -> ExitCode {
    if let Err(e) = ember_client::check_job(&job) {
        return fail(&e.to_string());
    }
    let files = match ember_client::name_side_files(files) {
        Ok(files) => files,
        Err(e) => return fail(&e),
    };
    let submitted = with_manager(args, async |client| {
        let mut job = job;
        if let Some(path) = binary.map(Path::to_path_buf).or_else(app_binary_path) {
            job.binary = Some(upload_app_binary(client, &path).await?);
        }
        if !files.is_empty() {
            let (held, reports) = client.upload_side_files(&files).await?;
            for report in reports {
                errln!("{report}");
            }
            job.files = held;
        }
        client
            .submit_until_answered(job, request, ember_client::SUBMIT_RESEND_LIMIT, |lost| {
                errln!("no answer to the submission ({lost}); sending it again")
            })
            .await
    });
    match submitted {
        Ok(id) => {
            emit(&format!("{id}\n"));
            let reach = args.reach_again();
            errln!(
                "submitted {id}; follow it with `ember status {id} {reach}` and read its output with `ember logs {id} {reach}`"
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

/// Names a program the executors (and in cluster mode the driver) run
/// instead of `ember`: a stand-in until packaged applications have their
/// own command line.
pub const APP_BINARY_ENV: &str = "EMBER_APP_BINARY";

/// The application binary `EMBER_APP_BINARY` names, if any.
pub fn app_binary_path() -> Option<std::path::PathBuf> {
    std::env::var_os(APP_BINARY_ENV)
        .filter(|v| !v.is_empty())
        .map(Into::into)
}

/// Uploads the application binary at `path` (nothing is sent if the
/// manager holds it) and says which on stderr.
pub async fn upload_app_binary(
    client: &ClusterClient,
    path: &std::path::Path,
) -> Result<ember_actors::binaries::BinaryRef, ClientError> {
    let uploaded = client.upload_binary(path).await?;
    report_upload(path, &uploaded);
    Ok(uploaded.binary)
}

/// Says on stderr whether an application binary was sent.
pub fn report_upload(path: &Path, uploaded: &ember_client::UploadedBinary) {
    errln!("{}", uploaded.report(path));
}

pub(crate) fn fetch_status(args: &ClusterArgs) -> Result<ClusterStatus, String> {
    with_manager(args, async |client| client.status().await).map_err(|e| e.to_string())
}

/// Writes to standard output; a reader gone away (`| head`) ends the
/// output quietly, as for any Unix tool.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        errln!("error: cannot write the output: {e}");
    }
}

fn print_json(value: &impl serde::Serialize) -> ExitCode {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            emit(&format!("{text}\n"));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

pub fn status(args: StatusArgs) -> ExitCode {
    let status = match fetch_status(&args.cluster) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    match &args.id {
        None if args.cluster.json => print_json(&status),
        None => {
            emit(&render_cluster(&status));
            ExitCode::SUCCESS
        }
        Some(id) => {
            if let Some(driver) = status.drivers.iter().find(|d| &d.id == id) {
                if args.cluster.json {
                    return print_json(driver);
                }
                let mut out = String::new();
                let _ = writeln!(out, "submission {}  ({})", driver.id, driver.name);
                let _ = writeln!(out, "  state:      {}", driver.state);
                if let Some(reason) = &driver.reason {
                    let _ = writeln!(out, "  reason:     {reason}");
                }
                let _ = writeln!(
                    out,
                    "  worker:     {}",
                    driver.worker.as_deref().unwrap_or("-")
                );
                let _ = writeln!(out, "  supervise:  {}", driver.supervise);
                let _ = writeln!(out, "  restarts:   {}", driver.restarts);
                let _ = writeln!(out, "  submitted:  {}", driver.submitted);
                let _ = writeln!(
                    out,
                    "  app:        {}",
                    driver.app.as_deref().unwrap_or("-")
                );
                emit(&out);
                return ExitCode::SUCCESS;
            }
            if let Some(app) = status.apps.iter().find(|a| &a.id == id) {
                if args.cluster.json {
                    return print_json(app);
                }
                let mut out = String::new();
                let _ = writeln!(out, "application {}  ({})", app.id, app.name);
                let _ = writeln!(out, "  state:      {}", app.state);
                if let Some(reason) = &app.reason {
                    let _ = writeln!(out, "  reason:     {reason}");
                }
                let _ = writeln!(
                    out,
                    "  asks for:   {} cores × {} MB per executor, {} cores in all",
                    app.executor_cores,
                    app.executor_memory_mb,
                    app.max_cores
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "every free".into())
                );
                let _ = writeln!(out, "  started:    {}", app.started);
                if let Some(ended) = &app.ended {
                    let _ = writeln!(out, "  ended:      {ended}");
                }
                // What ran where, finished or not.
                let mut executors: Vec<_> =
                    app.executors.iter().chain(&app.removed_executors).collect();
                executors.sort_by_key(|e| e.executor);
                let rows = executors
                    .into_iter()
                    .map(|e| {
                        let size = ember_engine::memory::human_size;
                        let (used, spilled, shuffle, rss, reads) = match &e.usage {
                            Some(u) => (
                                size(u.memory_used),
                                size(u.spilled_bytes),
                                size(u.shuffle_disk_bytes),
                                size(u.peak_rss),
                                format!(
                                    "{} / {}",
                                    u.shuffle_blocks_read_on_host, u.shuffle_blocks_fetched
                                ),
                            ),
                            None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
                        };
                        vec![
                            e.executor.to_string(),
                            e.worker.clone(),
                            e.cores.to_string(),
                            e.memory_mb.to_string(),
                            used,
                            spilled,
                            shuffle,
                            rss,
                            reads,
                            e.state.to_string(),
                            e.reason.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                out.push_str(&table(
                    &[
                        "EXECUTOR",
                        "WORKER",
                        "CORES",
                        "MEMORY MB",
                        "MEM USED",
                        "SPILLED",
                        "SHUFFLE DISK",
                        "PEAK RSS",
                        "BLOCKS HOST/NET",
                        "STATE",
                        "REASON",
                    ],
                    rows,
                ));
                if !app.streams.is_empty() {
                    out.push_str("\nStreaming queries\n");
                    out.push_str(&table(
                        &[
                            "QUERY",
                            "STATE",
                            "BATCHES",
                            "INPUT ROWS",
                            "LAST BATCH",
                            "ROWS/S",
                            "MS",
                            "WATERMARK",
                            "STATE ROWS",
                            "SINK",
                            "REASON",
                        ],
                        app.streams
                            .iter()
                            .map(|q| {
                                vec![
                                    q.name.clone(),
                                    q.state.clone(),
                                    q.batches.to_string(),
                                    q.input_rows.to_string(),
                                    q.last_batch.map_or("-".into(), |b| b.to_string()),
                                    q.last_rows_per_second.to_string(),
                                    q.last_duration_ms.to_string(),
                                    q.watermark.clone().unwrap_or_else(|| "-".into()),
                                    q.state_rows.to_string(),
                                    q.sink.clone(),
                                    q.reason.clone().unwrap_or_default(),
                                ]
                            })
                            .collect(),
                    ));
                }
                emit(&out);
                return ExitCode::SUCCESS;
            }
            fail(&format!(
                "no submission or application named '{id}'; `ember list` shows them"
            ))
        }
    }
}

pub fn list(args: ClusterArgs) -> ExitCode {
    let status = match fetch_status(&args) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if args.json {
        #[derive(serde::Serialize)]
        struct Listing<'a> {
            apps: &'a [ember_actors::cluster_manager::AppStatus],
            drivers: &'a [ember_actors::cluster_manager::DriverStatus],
        }
        return print_json(&Listing {
            apps: &status.apps,
            drivers: &status.drivers,
        });
    }
    emit(&render_apps_and_drivers(&status));
    ExitCode::SUCCESS
}

pub fn kill(args: IdArgs) -> ExitCode {
    match with_manager(&args.cluster, async |client| client.kill(&args.id).await) {
        Ok(what) => {
            errln!("{what}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

pub fn logs(args: LogsArgs) -> ExitCode {
    match with_manager(&args.cluster, async |client| {
        client.logs(&args.id, args.max_bytes).await
    }) {
        Ok(logs) => {
            if logs.truncated {
                errln!("(only the last {} bytes)", args.max_bytes);
            }
            if args.stderr {
                emit(&logs.stderr);
            } else {
                emit(&logs.stdout);
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

/// Columns padded to their widest cell.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<width$}  ");
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    if rows.is_empty() {
        out.push_str("(none)\n");
    }
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn render_cluster(status: &ClusterStatus) -> String {
    let mut out = format!(
        "cluster manager {}{}\n\nWorkers\n",
        status.manager,
        if status.recovering {
            " (recovering: waiting for workers and drivers to return)"
        } else {
            ""
        }
    );
    let workers = status
        .workers
        .iter()
        .map(|w| {
            vec![
                w.id.clone(),
                w.host.clone(),
                w.state.clone(),
                format!("{}/{}", w.cores_used, w.cores),
                format!("{}/{}", w.memory_used_mb, w.memory_mb),
            ]
        })
        .collect();
    out.push_str(&table(
        &["WORKER", "HOST", "STATE", "CORES USED", "MEMORY MB USED"],
        workers,
    ));
    out.push('\n');
    out.push_str(&render_apps_and_drivers(status));
    out
}

fn render_apps_and_drivers(status: &ClusterStatus) -> String {
    let mut out = String::from("Applications\n");
    let apps = status
        .apps
        .iter()
        .map(|a| {
            // The executors it has, or once it has ended, those it had.
            let executors = if a.ended.is_some() {
                &a.removed_executors
            } else {
                &a.executors
            };
            let workers: std::collections::BTreeSet<&str> =
                executors.iter().map(|e| e.worker.as_str()).collect();
            vec![
                a.id.clone(),
                a.name.clone(),
                a.state.clone(),
                executors.len().to_string(),
                executors.iter().map(|e| e.cores).sum::<u32>().to_string(),
                if workers.is_empty() {
                    "-".to_string()
                } else {
                    workers.into_iter().collect::<Vec<_>>().join(",")
                },
                a.started.clone(),
                a.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "APP",
            "NAME",
            "STATE",
            "EXECUTORS",
            "CORES",
            "WORKERS",
            "STARTED",
            "REASON",
        ],
        apps,
    ));
    out.push_str("\nSubmissions (cluster mode)\n");
    let drivers = status
        .drivers
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                d.name.clone(),
                d.state.clone(),
                d.worker.clone().unwrap_or_else(|| "-".into()),
                d.restarts.to_string(),
                d.submitted.clone(),
                d.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "SUBMISSION",
            "NAME",
            "STATE",
            "WORKER",
            "RESTARTS",
            "SUBMITTED",
            "REASON",
        ],
        drivers,
    ));
    out
}
