//! `ember local-cluster`: a real multi-process cluster on this machine — a
//! cluster manager and N workers as child processes with certificates made
//! for them — for trying cluster modes without setting up hosts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Args;

use ember_actors::worker::child::{die_with_parent, signal};

use crate::cli::fail;

#[derive(Debug, Args)]
pub struct LocalClusterArgs {
    /// Workers to start.
    #[arg(long, default_value_t = 2)]
    pub workers: u32,
    /// Cores each worker offers.
    #[arg(long, default_value_t = 1)]
    pub cores_per_worker: u32,
    /// Memory each worker offers.
    #[arg(long, default_value = "2g")]
    pub memory_per_worker: String,
    /// The cluster manager's port (0 picks a free one).
    #[arg(long, default_value_t = 7077)]
    pub port: u16,
    /// Where certificates, state, work dirs and logs go.
    #[arg(long, value_name = "DIR", default_value = "local-cluster")]
    pub dir: PathBuf,
    /// A configuration property for every process (repeatable).
    #[arg(long = "conf", short = 'c', value_name = "KEY=VALUE")]
    pub conf: Vec<String>,
}

/// Children that are killed when this value is dropped.
struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        // Workers first, so they stop their executors; then the manager.
        for (_, child) in self.0.iter_mut().rev() {
            signal(child.id(), libc::SIGTERM);
        }
        for (_, child) in self.0.iter_mut().rev() {
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn ensure_certs(dir: &Path, workers: u32) -> Result<(), String> {
    let certs = dir.join("certs");
    if !certs.join(ember_certs::CA_CERT).exists() {
        ember_certs::init_ca(&certs, "ember-local", ember_certs::DEFAULT_CA_DAYS, false)
            .map_err(|e| e.to_string())?;
    }
    let mut wanted = vec![
        (
            ember_certs::Role::ClusterManager,
            "cluster-manager".to_string(),
        ),
        (ember_certs::Role::Client, "client".to_string()),
    ];
    for i in 1..=workers {
        wanted.push((ember_certs::Role::Worker, format!("worker-{i}")));
    }
    for (role, name) in wanted {
        if certs.join(format!("{name}.pem")).exists() {
            continue;
        }
        let request =
            ember_certs::IssueRequest::new(role, &name, Vec::new(), ember_certs::DEFAULT_NODE_DAYS);
        ember_certs::issue(&certs, &request).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn spawn(program: &Path, args: &[String], log: &Path, stdout: Stdio) -> Result<Child, String> {
    let stderr =
        std::fs::File::create(log).map_err(|e| format!("cannot write {}: {e}", log.display()))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    die_with_parent(&mut command, libc::SIGTERM);
    command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))
}

pub fn run(args: LocalClusterArgs) -> ExitCode {
    match start(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn start(args: &LocalClusterArgs) -> Result<(), String> {
    if args.workers == 0 || args.cores_per_worker == 0 {
        return Err("--workers and --cores-per-worker must be at least 1".into());
    }
    ember_session::setup::parse_memory_mb(&args.memory_per_worker)
        .map_err(|e| format!("--memory-per-worker: {e}"))?;
    let dir = std::path::absolute(&args.dir).map_err(|e| e.to_string())?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("cannot use {}: {e}", dir.display()))?;
    ensure_certs(&dir, args.workers)?;
    let certs = dir.join("certs");
    let program = std::env::current_exe().map_err(|e| e.to_string())?;
    let conf: Vec<String> = args
        .conf
        .iter()
        .flat_map(|c| ["--conf".to_string(), c.clone()])
        .collect();
    let mut children = Children(Vec::new());

    let mut manager_args = vec![
        "--role".to_string(),
        "cluster-manager".into(),
        "--listen".into(),
        format!("127.0.0.1:{}", args.port),
        "--certs".into(),
        certs.display().to_string(),
        "--name".into(),
        "cluster-manager".into(),
        "--state-dir".into(),
        dir.join("cm-state").display().to_string(),
    ];
    manager_args.extend(conf.iter().cloned());
    let mut manager = spawn(
        &program,
        &manager_args,
        &logs.join("cluster-manager.log"),
        Stdio::piped(),
    )?;
    let banner = manager.stdout.take();
    children.0.push(("cluster-manager".into(), manager));
    let url = banner.and_then(ember_client::manager_url).ok_or_else(|| {
        format!(
            "the cluster manager did not start; see {}",
            logs.join("cluster-manager.log").display()
        )
    })?;
    let manager_addr = url.trim_start_matches("ember://").to_string();

    for i in 1..=args.workers {
        let name = format!("worker-{i}");
        let mut worker_args = vec![
            "--role".to_string(),
            "worker".into(),
            "--cluster-manager".into(),
            manager_addr.clone(),
            "--certs".into(),
            certs.display().to_string(),
            "--name".into(),
            name.clone(),
            "--cores".into(),
            args.cores_per_worker.to_string(),
            "--memory".into(),
            args.memory_per_worker.clone(),
            "--work-dir".into(),
            dir.join(&name).display().to_string(),
        ];
        worker_args.extend(conf.iter().cloned());
        let worker = spawn(
            &program,
            &worker_args,
            &logs.join(format!("{name}.log")),
            Stdio::null(),
        )?;
        children.0.push((name, worker));
    }

    wait_for_workers(&url, &certs, args.workers)?;
    outln!("master {url}");
    errln!(
        "local cluster up: {} workers × {} cores at {url}\n\
         submit with:  ember submit --master {url} --certs {} examples/watch_time.sql\n\
         status with:  ember status --master {url} --certs {}\n\
         logs in {}; Ctrl-C stops the cluster",
        args.workers,
        args.cores_per_worker,
        certs.display(),
        certs.display(),
        logs.display()
    );
    let system = actix::System::new();
    system.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    });
    errln!("stopping the local cluster");
    drop(children);
    Ok(())
}

fn wait_for_workers(url: &str, certs: &Path, workers: u32) -> Result<(), String> {
    let master: ember_session::master::Master = url.parse().map_err(|e| format!("{e}"))?;
    let args = crate::cli::ClusterArgs {
        master,
        certs: certs.to_path_buf(),
        name: Some("client".into()),
        json: false,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(status) = crate::client::fetch_status(&args) {
            let alive = status.workers.iter().filter(|w| w.state == "ALIVE").count();
            if alive >= workers as usize {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err("the workers did not register within 20 s; see the logs".to_string());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
