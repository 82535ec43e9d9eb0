//! A cluster of real processes on loopback — a cluster manager and workers
//! started from the `ember` binary, with certificates made for them — for
//! the end-to-end tests and the cluster benchmark. Processes are found and
//! checked through /proc, so "nothing left behind" is the OS's word. This
//! is test support, never shipped: a fixture that cannot start panics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use ember_actors::worker::child::signal;

pub mod bounded;
pub mod kafka;
mod probe;
pub use bounded::{BoundedChild, BoundedCommand, COMMAND_BOUND};
use ember_certs::{IssueRequest, Role, init_ca, issue};
pub use probe::ProbeChild;
use serde_json::Value;

/// The client certificate's name.
pub const CLIENT: &str = "client";

pub struct LoopbackCluster {
    pub dir: tempfile::TempDir,
    /// `ember://127.0.0.1:PORT`.
    pub master: String,
    program: PathBuf,
    manager_conf: Vec<String>,
    manager: Option<Child>,
    manager_port: u16,
    workers: Vec<(String, Child)>,
    /// Cores each worker offers.
    worker_cores: u32,
}

impl LoopbackCluster {
    /// A manager (with `manager_conf` as `--conf` pairs) and `workers`
    /// one-core workers named w1, w2, ...; returns once all registered.
    pub fn start(program: &Path, workers: usize, manager_conf: &[&str]) -> Self {
        Self::start_sized(program, workers, 1, manager_conf)
    }

    /// Like [`LoopbackCluster::start`], with `cores` cores on each worker.
    pub fn start_sized(program: &Path, workers: usize, cores: u32, manager_conf: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        init_ca(&certs, "loopback", 5, false).unwrap();
        let request = |role, name: &str| IssueRequest::new(role, name, vec![], 5);
        issue(&certs, &request(Role::ClusterManager, "cm")).unwrap();
        issue(&certs, &request(Role::Client, CLIENT)).unwrap();
        let names: Vec<String> = (1..=workers).map(|i| format!("w{i}")).collect();
        for name in &names {
            issue(&certs, &request(Role::Worker, name)).unwrap();
        }
        let mut cluster = Self {
            dir,
            master: String::new(),
            program: program.to_path_buf(),
            manager_conf: manager_conf.iter().map(|c| c.to_string()).collect(),
            manager: None,
            manager_port: 0,
            workers: Vec::new(),
            worker_cores: cores,
        };
        cluster.start_manager();
        for name in &names {
            cluster.start_worker(name);
        }
        cluster.wait_for("the workers to register", Duration::from_secs(20), |s| {
            s["workers"]
                .as_array()
                .is_some_and(|w| w.iter().filter(|w| w["state"] == "ALIVE").count() == workers)
        });
        cluster
    }

    /// The manager's address, as clients dial it.
    pub fn manager_addr(&self) -> std::net::SocketAddr {
        self.master
            .trim_start_matches("ember://")
            .parse()
            .expect("a loopback manager listens on an IP address")
    }

    pub fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// Starts the manager, or starts it again on the same port and state
    /// dir after [`LoopbackCluster::kill_manager`].
    pub fn start_manager(&mut self) {
        let listen = format!("127.0.0.1:{}", self.manager_port);
        let mut command = Command::new(&self.program);
        command
            .args([
                "--role",
                "cluster-manager",
                "--listen",
                &listen,
                "--name",
                "cm",
            ])
            .arg("--certs")
            .arg(self.certs())
            .arg("--state-dir")
            .arg(self.dir.path().join("cm-state"));
        for pair in &self.manager_conf {
            command.args(["--conf", pair]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        // Kept from here on, so a failing start still stops it on drop.
        self.manager = Some(child);
        let url = ember_client::manager_url(out)
            .unwrap_or_else(|| panic!("the cluster manager printed no ember:// address"));
        self.manager_port = url.rsplit(':').next().unwrap().parse().unwrap();
        self.master = url;
    }

    fn start_worker(&mut self, name: &str) {
        let manager = self.master.trim_start_matches("ember://").to_string();
        let child = Command::new(&self.program)
            .args([
                "--role",
                "worker",
                "--cluster-manager",
                &manager,
                "--name",
                name,
            ])
            .args(["--cores", &self.worker_cores.to_string(), "--memory", "2g"])
            .arg("--certs")
            .arg(self.certs())
            .arg("--work-dir")
            .arg(self.dir.path().join(name))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.workers.push((name.to_string(), child));
    }

    pub fn kill_manager(&mut self) {
        if let Some(mut manager) = self.manager.take() {
            let _ = manager.kill();
            let _ = manager.wait();
        }
    }

    /// SIGKILLs worker `name` and reaps it.
    pub fn kill_worker(&mut self, name: &str) {
        if let Some((_, worker)) = self.workers.iter_mut().find(|(n, _)| n == name) {
            signal(worker.id(), libc::SIGKILL);
            let _ = worker.wait();
        }
    }

    /// The cluster manager's process id, while it runs.
    pub fn manager_pid(&self) -> Option<u32> {
        self.manager.as_ref().map(Child::id)
    }

    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.iter().map(|(_, w)| w.id()).collect()
    }

    /// An `ember` command with this cluster's master and certificates.
    pub fn ember(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(args)
            .args(["--master", &self.master])
            .arg("--certs")
            .arg(self.certs());
        command
    }

    /// `ember status --json`, if the manager answers.
    pub fn status(&self) -> Option<Value> {
        let out = self.ember(&["status", "--json"]).bounded_output().ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Polls `ember status --json` until `check` holds.
    pub fn wait_for(&self, what: &str, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let status = self.status();
            if let Some(s) = status.as_ref().filter(|s| check(s)) {
                return s.clone();
            }
            if start.elapsed() > limit {
                panic!("gave up waiting for {what}: {status:#?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LoopbackCluster {
    fn drop(&mut self) {
        for (_, worker) in &self.workers {
            signal(worker.id(), libc::SIGTERM);
        }
        for (_, worker) in &mut self.workers {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && !matches!(worker.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = worker.kill();
            let _ = worker.wait();
        }
        self.kill_manager();
    }
}

/// The newest application named `name` in a status.
pub fn app<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["apps"]
        .as_array()?
        .iter()
        .rev()
        .find(|a| a["name"] == name)
}

/// The submission `id` in a status.
pub fn driver<'a>(status: &'a Value, id: &str) -> Option<&'a Value> {
    status["drivers"].as_array()?.iter().find(|d| d["id"] == id)
}

/// Whether `pid` is running or stopped; a zombie has finished.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits up to `limit` for every one of `pids` to be gone; returns how long
/// that took.
pub fn wait_gone(pids: &[u32], limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if pids.iter().all(|p| !alive(*p)) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

pub fn command_line(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Live processes running `ember --role ROLE` with `needle` among their
/// arguments (an application or submission id).
pub fn processes(role: &str, needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let args = command_line(pid);
        let has_role = args.windows(2).any(|w| w[0] == "--role" && w[1] == role);
        if has_role && args.iter().any(|a| a == needle) && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// A program that reads its standard input to the end, then exits 0: run
/// as an executor, it waits quietly until its worker kills it. A
/// hand-made x86-64 Linux ELF (a header, one loadable segment, 30 bytes
/// of code); elsewhere `/bin/false`, whose executors exit at once and are
/// launched again and again while the bench waits.
pub fn idle_program() -> Vec<u8> {
    if std::env::consts::ARCH != "x86_64" {
        return std::fs::read("/bin/false").unwrap();
    }
    const BASE: u64 = 0x40_0000;
    const CODE_AT: u64 = 64 + 56;
    #[rustfmt::skip]
    let code: [u8; 30] = [
        0x31, 0xc0,                         // read: xor eax, eax
        0x31, 0xff,                         //       xor edi, edi
        0x48, 0x8d, 0x74, 0x24, 0xf8,       //       lea rsi, [rsp-8]
        0xba, 0x01, 0x00, 0x00, 0x00,       //       mov edx, 1
        0x0f, 0x05,                         //       syscall
        0x48, 0x85, 0xc0,                   //       test rax, rax
        0x7f, 0xeb,                         //       jg read
        0xb8, 0x3c, 0x00, 0x00, 0x00,       //       mov eax, 60 (exit)
        0x31, 0xff,                         //       xor edi, edi
        0x0f, 0x05,                         //       syscall
    ];
    let size = CODE_AT + code.len() as u64;
    let mut elf = Vec::new();
    elf.extend([0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend(2u16.to_le_bytes()); // ET_EXEC
    elf.extend(62u16.to_le_bytes()); // x86-64
    elf.extend(1u32.to_le_bytes());
    elf.extend((BASE + CODE_AT).to_le_bytes()); // entry
    elf.extend(64u64.to_le_bytes()); // program headers
    elf.extend(0u64.to_le_bytes()); // no section headers
    elf.extend(0u32.to_le_bytes());
    for half in [64u16, 56, 1, 64, 0, 0] {
        elf.extend(half.to_le_bytes());
    }
    elf.extend(1u32.to_le_bytes()); // PT_LOAD
    elf.extend(5u32.to_le_bytes()); // read + execute
    elf.extend(0u64.to_le_bytes());
    elf.extend(BASE.to_le_bytes());
    elf.extend(BASE.to_le_bytes());
    elf.extend(size.to_le_bytes());
    elf.extend(size.to_le_bytes());
    elf.extend(0x1000u64.to_le_bytes());
    elf.extend(code);
    elf
}

/// The value of environment variable `name` (a benchmark's knob), or
/// `default` when it is unset or does not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What a finished child process printed and its peak resident memory.
pub struct Measured {
    pub output: std::process::Output,
    /// The child's peak RSS in bytes, as last read from its
    /// `/proc/PID/status` (VmHWM) while it ran, every 10 ms. Not `wait4`'s
    /// `ru_maxrss`: that counts the parent's memory the child was forked
    /// from too.
    pub peak_rss: u64,
}

/// Runs `command` to the end and reports its peak RSS.
pub fn run_measured(command: &mut Command) -> std::io::Result<Measured> {
    measure(command.stdout(std::process::Stdio::piped()))
}

/// [`run_measured`], with standard output written to `stdout` (a file,
/// for output too large to hold) instead of gathered.
pub fn run_measured_into(
    command: &mut Command,
    stdout: std::fs::File,
) -> std::io::Result<Measured> {
    measure(command.stdout(stdout))
}

fn measure(command: &mut Command) -> std::io::Result<Measured> {
    let child = command
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watching = std::sync::Arc::clone(&done);
    let watcher = std::thread::spawn(move || {
        let mut peak = 0;
        while !watching.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(hwm) = ember_engine::memory::peak_rss(Some(pid)) {
                peak = peak.max(hwm);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    });
    let output = child.bounded_wait_with_output();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak_rss = watcher.join().unwrap_or_default();
    Ok(Measured {
        output: output?,
        peak_rss,
    })
}

/// The `ember` binary a benchmark runs: `built` (this build's), unless
/// `EMBER_BENCH_BINARY` names another, such as a build of an earlier
/// commit, to compare before and after against the same baseline.
pub fn bench_binary(built: &str) -> &'static Path {
    static CHOSEN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CHOSEN.get_or_init(|| {
        std::env::var_os("EMBER_BENCH_BINARY")
            .filter(|b| !b.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(built))
    })
}

/// The Python of a venv at `venv` holding `package` (a pip requirement,
/// such as `duckdb` or `pyspark==4.3.0`), from PyPI: made and installed the
/// first time, found after (a marker in the venv names what it holds).
pub fn python_venv(venv: &Path, package: &str) -> PathBuf {
    let python = venv.join("bin/python");
    let marker = venv.join(".ember-installed");
    if std::fs::read_to_string(&marker).is_ok_and(|held| held == package) {
        return python;
    }
    eprintln!("installing {package} from PyPI into {} ...", venv.display());
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(venv)
        .status()
        .expect("cannot run python3 -m venv");
    assert!(made.success(), "python3 -m venv {} failed", venv.display());
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", package])
        .status()
        .expect("cannot run pip");
    assert!(pip.success(), "pip install {package} failed");
    std::fs::write(&marker, package).unwrap();
    python
}
