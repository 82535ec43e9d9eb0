//! The application-binary benchmark: a cluster manager and three one-core
//! workers on loopback (the release `ember` binary), and a 50 MiB ELF
//! program: a tiny one padded with bytes that differ in each run, so that
//! every run's binary is new to the cluster.
//!
//! - submit to cached on all three workers: `ember submit` in client mode
//!   with three executors and `EMBER_APP_BINARY`, from the command's start
//!   (hashing, upload, registration, placement, three fetches) until the
//!   binary is under its hash in every worker's cache (polled every
//!   millisecond; a cached file is whole, since it takes its name last);
//! - the upload alone: `ClusterClient::upload_binary` of a new binary, from
//!   a client already connected (hash, offer, stream, the manager's check
//!   and sync);
//! - a second upload of the same binary: nothing is sent;
//! - a packaged application's 1-row job in cluster mode, its binary cached
//!   (`examples/watch-time-app`, release build), against the same job as a
//!   SQL script, interleaved: from `ember submit --deploy-mode cluster` to
//!   the driver FINISHED (the manager asked every 2 ms).
//!
//! The program only waits for its standard input to close, so its
//! executors never register; each submission is killed once the caches
//! hold its binary, and the bench waits for an idle cluster before the
//! next.
//!
//! `cargo build --release -p watch-time-app && cargo bench --bench binaries`;
//! `EMBER_BENCH_RUNS` changes the runs of each figure (default 5),
//! `EMBER_BENCH_BINARY_MIB` the size (default 50).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ember_testkit::env_or;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ember_actors::binaries::hash_file;
use ember_client::ClusterClient;
use ember_testkit::{CLIENT, LoopbackCluster, signal};

const WORKERS: [&str; 3] = ["w1", "w2", "w3"];
/// The target for distributing a 50 MB binary to three workers.
const TARGET: Duration = Duration::from_secs(1);

fn ember() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ember"))
}

/// A `bytes`-long executable ELF program unique to `run`.
fn program(dir: &Path, run: u64, bytes: usize) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let mut image = ember_testkit::idle_program();
    assert!(
        image.len() + 8 <= bytes,
        "the program is larger than the binary"
    );
    image.resize(bytes - 8, 0);
    image.extend(run.to_le_bytes());
    let path = dir.join(format!("app-{run}"));
    std::fs::write(&path, image).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn millis(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// Median, min and max.
fn spread(mut times: Vec<Duration>) -> (Duration, Duration, Duration) {
    times.sort();
    (times[times.len() / 2], times[0], times[times.len() - 1])
}

fn report(what: &str, times: &[Duration]) -> Duration {
    let (median, min, max) = spread(times.to_vec());
    let each: Vec<String> = times.iter().map(|t| millis(*t)).collect();
    println!(
        "{what}: median {} (min {}, max {}) [{}]",
        millis(median),
        millis(min),
        millis(max),
        each.join(", ")
    );
    median
}

/// Waits until every worker's cores are free again.
fn wait_idle(cluster: &LoopbackCluster) {
    cluster.wait_for("an idle cluster", Duration::from_secs(30), |s| {
        s["workers"]
            .as_array()
            .is_some_and(|w| w.iter().all(|w| w["cores_used"] == 0))
    });
}

fn main() {
    let runs = env_or("EMBER_BENCH_RUNS", 5);
    let bytes = usize::try_from(env_or("EMBER_BENCH_BINARY_MIB", 50)).unwrap() << 20;
    // Where the program exits at once (not x86-64), its executors keep
    // failing: never let that end an application before the caches fill.
    let cluster = LoopbackCluster::start(ember(), 3, &["ember.deploy.maxExecutorRetries=1000"]);
    let work = cluster.dir.path().join("bench");
    std::fs::create_dir_all(&work).unwrap();
    let job = work.join("one.sql");
    std::fs::write(&job, "SELECT 1 AS one;\n").unwrap();
    println!(
        "application binary: {} bytes, {} workers on loopback, {runs} runs",
        bytes,
        WORKERS.len()
    );

    let mut distributed = Vec::new();
    for run in 0..runs {
        let app = program(&work, run, bytes);
        let sha = hash_file(&app).unwrap().sha256().to_string();
        let caches: Vec<PathBuf> = WORKERS
            .iter()
            .map(|w| cluster.dir.path().join(w).join("binaries").join(&sha))
            .collect();
        let started = Instant::now();
        let mut submit = cluster
            .ember(&["submit", "--total-executor-cores", "3"])
            .args(["--name", &format!("distribute-{run}")])
            .arg(&job)
            .env("EMBER_APP_BINARY", &app)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        while !caches.iter().all(|c| c.exists()) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the binary did not reach every worker: {caches:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        distributed.push(started.elapsed());
        signal(submit.id(), libc::SIGKILL);
        let _ = submit.wait();
        wait_idle(&cluster);
    }

    let creds = ember_certs::load_node(&cluster.certs(), CLIENT).unwrap();
    let addr = cluster.manager_addr();
    let (uploads, again) = actix::System::new().block_on(async move {
        let client = ClusterClient::connect(&creds, "bench", addr, "127.0.0.1")
            .await
            .unwrap();
        let mut uploads = Vec::new();
        let mut again = Vec::new();
        for run in 0..runs {
            let app = program(&work, 1000 + run, bytes);
            let started = Instant::now();
            let first = client.upload_binary(&app).await.unwrap();
            uploads.push(started.elapsed());
            assert_eq!(first.sent_bytes, bytes as u64);
            let started = Instant::now();
            let second = client.upload_binary(&app).await.unwrap();
            again.push(started.elapsed());
            assert_eq!(second.sent_bytes, 0, "a second upload sends nothing");
        }
        client.close().await;
        (uploads, again)
    });
    let (script_runs, app_runs) = packaged_against_script(&cluster, runs);

    println!();
    let median = report("submit to cached on 3 workers", &distributed);
    report("upload alone (connected client)", &uploads);
    report("second upload of the same binary (0 bytes sent)", &again);
    println!();
    println!("| figure | median | target | |");
    println!("|---|---|---|---|");
    println!(
        "| {} MiB binary, submit to cached on 3 workers | {} | <= 1 s | {} |",
        bytes >> 20,
        millis(median),
        if median <= TARGET { "PASS" } else { "MISS" }
    );
    println!(
        "| second upload of the same binary | {} | uploads nothing | PASS |",
        millis(spread(again).0)
    );
    let script = spread(script_runs).0;
    let app = spread(app_runs).0;
    let ratio = app.as_secs_f64() / script.as_secs_f64();
    println!(
        "| packaged app's 1-row job, cluster mode, binary cached | {} vs script {} = {ratio:.2}x | <= 1.3x | {} |",
        millis(app),
        millis(script),
        if ratio <= 1.3 { "PASS" } else { "MISS" }
    );
}

/// The release build of the example application, next to this bench's
/// `ember`; built by `cargo build --release -p watch-time-app` (build it
/// again after changing the sources, as the bench cannot tell).
fn watch_time_app() -> PathBuf {
    let app = ember().with_file_name("watch-time-app");
    assert!(
        app.is_file(),
        "{} is missing: run `cargo build --release -p watch-time-app` first",
        app.display()
    );
    app
}

/// Times the watch-time job on one row in cluster mode, as the packaged
/// application and as the SQL script, `runs` times each, interleaved.
fn packaged_against_script(cluster: &LoopbackCluster, runs: u64) -> (Vec<Duration>, Vec<Duration>) {
    let app = watch_time_app();
    let work = cluster.dir.path().join("packaged");
    std::fs::create_dir_all(&work).unwrap();
    let views = ember::datagen::one_row_views(&work).unwrap();
    let out = work.join("per_video.parquet");
    let script = include_str!("../examples/watch_time.sql")
        .replace("'examples/data/views/'", &format!("'{}/'", views.display()))
        .replace(
            "'target/ember-output/watch_time_per_video.parquet'",
            &format!("'{}'", out.display()),
        );
    let job = work.join("watch_time.sql");
    std::fs::write(&job, script).unwrap();
    let app_args = [views.display().to_string() + "/", out.display().to_string()];
    let creds = ember_certs::load_node(&cluster.certs(), CLIENT).unwrap();
    let addr = cluster.manager_addr();
    actix::System::new().block_on(async move {
        let client = ClusterClient::connect(&creds, "bench-apps", addr, "127.0.0.1")
            .await
            .unwrap();
        let submit = async |packaged: bool| {
            let started = Instant::now();
            // --master and --certs come first: after `--` they would be
            // the application's own arguments.
            let out = std::process::Command::new(ember())
                .args(["submit", "--master", &cluster.master, "--certs"])
                .arg(cluster.certs())
                .args(["--deploy-mode", "cluster"])
                .args(if packaged {
                    vec![
                        app.display().to_string(),
                        "--".into(),
                        app_args[0].clone(),
                        app_args[1].clone(),
                    ]
                } else {
                    vec![job.display().to_string()]
                })
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
            loop {
                let status = client.status().await.unwrap();
                let state = status
                    .drivers
                    .iter()
                    .find(|d| d.id == id)
                    .map(|d| d.state.clone());
                match state.as_deref() {
                    Some("FINISHED") => return started.elapsed(),
                    Some("FAILED" | "KILLED" | "ERROR") => panic!("{id} ended {state:?}"),
                    _ => {}
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "{id} did not finish"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        // Once each untimed: the first run uploads and caches the binary.
        submit(true).await;
        submit(false).await;
        let (mut scripts, mut apps) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            scripts.push(submit(false).await);
            apps.push(submit(true).await);
        }
        client.close().await;
        report("1-row job in cluster mode, SQL script", &scripts);
        report("1-row job in cluster mode, packaged app (cached)", &apps);
        (scripts, apps)
    })
}
