//! Clusters spread over hosts for real: every node runs in its own Linux
//! network namespace, each with one address on a private subnet, joined by
//! veth cables to a bridge that lives in a "switch" namespace of its own,
//! so nothing is added to the machine's own network. Nodes talk QUIC with
//! mutual TLS over those addresses, with certificates naming them, as on
//! separate machines. A partition is a cable taken down at the switch.
//!
//! Host a runs the cluster manager, hosts b and c a one-core worker each,
//! host d the client (`ember submit`, client mode). All share the file
//! system, as machines sharing NFS would. Every process started is stopped
//! by PID when the cluster is dropped, anything still running inside the
//! namespaces is killed, and the namespaces are deleted, also when a test
//! fails; a failing test prints every process's output first.
//!
//! Creating namespaces needs root and `ip` (iproute2); without them each
//! test says why on stderr and passes.

use ember_testkit::BoundedCommand;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::MutexGuard;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ember_testkit::{self as loopback, alive, processes, signal, wait_gone};
use serde_json::Value;

use crate::support::{local_rows, plain, text};

/// The hosts' subnet: private, and only ever configured inside the
/// namespaces.
const SUBNET: &str = "10.213.77";
const MANAGER_PORT: u16 = 7077;
/// Namespaces are named `ember-nt-PID-N-HOST`.
const PREFIX: &str = "ember-nt";

fn ember() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ember"))
}

/// Runs `ip ARGS`; the error names the command and says what `ip` said.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .bounded_output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            text(&out.stderr).trim()
        ))
    }
}

/// The network namespace `pid` runs in, as /proc shows it (`net:[INODE]`).
fn netns_of(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|l| l.to_string_lossy().into_owned())
}

/// Named namespace `ns` as /proc names it, if it exists.
fn netns_id(ns: &str) -> Result<String, String> {
    let inode = std::fs::metadata(format!("/run/netns/{ns}"))
        .map_err(|e| format!("/run/netns/{ns}: {e}"))?
        .ino();
    Ok(format!("net:[{inode}]"))
}

/// Live processes in any of the namespaces `ids`.
fn processes_in(ids: &[String]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| alive(*pid) && netns_of(*pid).is_some_and(|ns| ids.contains(&ns)))
        .collect()
}

/// One machine: a namespace whose `eth0` is cabled to the switch.
pub struct Host {
    pub label: String,
    pub ns: String,
    pub ip: String,
    /// The cable's end in the switch namespace.
    port: String,
    /// The namespace as `/proc/PID/ns/net` names it.
    id: String,
}

/// Hosts on one switch, torn down on drop.
pub struct Network {
    switch: String,
    hosts: Vec<Host>,
    /// Every namespace made, in order.
    made: Vec<String>,
}

static NETWORKS: AtomicUsize = AtomicUsize::new(0);

impl Network {
    /// Hosts named `labels` at SUBNET.1, .2, ... Fails with the reason when
    /// namespaces cannot be made here.
    pub fn new(labels: &[&str]) -> Result<Self, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        remove_stale_namespaces();
        let run = format!(
            "{PREFIX}-{}-{}",
            std::process::id(),
            NETWORKS.fetch_add(1, Ordering::SeqCst)
        );
        let mut net = Network {
            switch: format!("{run}-sw"),
            hosts: Vec::new(),
            made: Vec::new(),
        };
        // From here on, a failure drops `net`, which deletes what was made.
        ip(&["netns", "add", &net.switch])?;
        net.made.push(net.switch.clone());
        let sw = net.switch.clone();
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for (i, label) in labels.iter().enumerate() {
            let ns = format!("{run}-{label}");
            ip(&["netns", "add", &ns])?;
            net.made.push(ns.clone());
            let port = format!("p-{label}");
            let addr = format!("{SUBNET}.{}", i + 1);
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            net.hosts.push(Host {
                label: label.to_string(),
                id: netns_id(&ns)?,
                ns,
                ip: addr,
                port,
            });
        }
        // `ip netns exec` must work too (it mounts a private /sys).
        let probe = Command::new("ip")
            .args(["netns", "exec", &net.hosts[0].ns])
            .arg(ember())
            .arg("--version")
            .bounded_output()
            .map_err(|e| format!("cannot run `ip netns exec`: {e}"))?;
        if !probe.status.success() {
            return Err(format!(
                "`ip netns exec` failed: {}",
                text(&probe.stderr).trim()
            ));
        }
        Ok(net)
    }

    pub fn host(&self, label: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.label == label)
            .unwrap_or_else(|| panic!("no host {label}"))
    }

    /// The label of the host `pid` runs on, if it is one of these.
    pub fn host_of(&self, pid: u32) -> Option<String> {
        let ns = netns_of(pid)?;
        self.hosts
            .iter()
            .find(|h| h.id == ns)
            .map(|h| h.label.clone())
    }

    /// Every live process inside these hosts.
    pub fn processes_inside(&self) -> Vec<u32> {
        let ids: Vec<String> = self.hosts.iter().map(|h| h.id.clone()).collect();
        processes_in(&ids)
    }

    /// Pulls host `label`'s cable out at the switch: it hears nothing and
    /// is heard by no one.
    pub fn unplug(&self, label: &str) {
        let port = &self.host(label).port;
        ip(&["-n", &self.switch, "link", "set", port, "down"]).unwrap();
    }

    pub fn plug(&self, label: &str) {
        let port = &self.host(label).port;
        ip(&["-n", &self.switch, "link", "set", port, "up"]).unwrap();
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Whatever still runs inside goes first: the namespace of a
        // process lives on after its name is deleted.
        let left = self.processes_inside();
        for pid in &left {
            signal(*pid, libc::SIGKILL);
        }
        if wait_gone(&left, Duration::from_secs(5)).is_none() {
            eprintln!("netns: processes {left:?} outlived SIGKILL");
        }
        for ns in self.made.iter().rev() {
            // The veth cables go with their namespaces.
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("netns: {e}");
            }
        }
    }
}

/// Deletes namespaces left by test runs whose process is gone (a run that
/// was SIGKILLed cannot clean up after itself), and ends what still runs
/// in them.
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).bounded_output() else {
        return;
    };
    for line in text(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(&format!("{PREFIX}-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !alive(pid) {
            if let Ok(id) = netns_id(name) {
                let left = processes_in(&[id]);
                for pid in &left {
                    signal(*pid, libc::SIGKILL);
                }
                wait_gone(&left, Duration::from_secs(5));
            }
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// `ember status --json`, asked from inside host a.
#[derive(Clone)]
pub struct StatusProbe {
    ns: String,
    master: String,
    certs: PathBuf,
}

impl StatusProbe {
    pub fn get(&self) -> Option<Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(ember())
            .args(["status", "--json", "--master", &self.master, "--certs"])
            .arg(&self.certs)
            .stdin(Stdio::null())
            .bounded_output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }
}

/// A process this cluster started, with its output in files.
struct Proc {
    label: String,
    host: String,
    child: Child,
    ended: Option<ExitStatus>,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// Names a process an [`NsCluster`] started.
#[derive(Clone, Copy, Debug)]
pub struct ProcId(usize);

/// A manager on host a, one-core workers `wb` on b and `wc` on c, and
/// `ember submit` on host d.
pub struct NsCluster {
    pub net: Network,
    pub dir: tempfile::TempDir,
    /// `ember://SUBNET.1:7077`.
    pub master: String,
    probe: StatusProbe,
    procs: Vec<Proc>,
    _turn: MutexGuard<'static, ()>,
}

impl NsCluster {
    /// Starts the cluster and returns once both workers registered; `None`
    /// (after saying why on stderr) when namespaces cannot be made here.
    pub fn start() -> Option<Self> {
        let turn = crate::cluster::ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let net = match Network::new(&["a", "b", "c", "d"]) {
            Ok(net) => net,
            Err(why) => {
                eprintln!("skipping: network namespaces unavailable ({why})");
                return None;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let master = format!("ember://{}:{MANAGER_PORT}", net.host("a").ip);
        let probe = StatusProbe {
            ns: net.host("a").ns.clone(),
            master: master.clone(),
            certs: dir.path().join("certs"),
        };
        let mut cluster = NsCluster {
            net,
            dir,
            master,
            probe,
            procs: Vec::new(),
            _turn: turn,
        };
        cluster.make_certificates();
        cluster.start_manager();
        cluster.start_worker("b", "wb");
        cluster.start_worker("c", "wc");
        let (b, c) = (cluster.ip("b"), cluster.ip("c"));
        cluster.wait_for("both workers to register", Duration::from_secs(20), |s| {
            let hosts: BTreeSet<&str> = s["workers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|w| w["state"] == "ALIVE")
                .filter_map(|w| w["host"].as_str())
                .collect();
            hosts == BTreeSet::from([b.as_str(), c.as_str()])
        });
        Some(cluster)
    }

    pub fn ip(&self, host: &str) -> String {
        self.net.host(host).ip.clone()
    }

    pub fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// Certificates from `ember certs`, each naming its host's address
    /// (and no other: loopback would not do).
    fn make_certificates(&self) {
        let certs = self.certs();
        let certs = certs.to_str().unwrap();
        let mut runs = vec![vec!["certs", "init", "--dir", certs]];
        let nodes = [
            ("cluster-manager", "cm", self.ip("a")),
            ("worker", "wb", self.ip("b")),
            ("worker", "wc", self.ip("c")),
            ("client", "client", self.ip("d")),
        ];
        for (role, name, host) in &nodes {
            runs.push(vec![
                "certs", "issue", "--dir", certs, "--role", role, "--name", name, "--host", host,
            ]);
        }
        for args in runs {
            let out = Command::new(ember()).args(&args).bounded_output().unwrap();
            assert!(
                out.status.success(),
                "ember {args:?}: {}",
                text(&out.stderr)
            );
        }
    }

    /// Starts `ember ARGS` on `host`; its output goes to files.
    pub fn spawn(&mut self, host: &str, label: &str, args: &[&str]) -> ProcId {
        let logs = self.dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let n = self.procs.len();
        let stdout = logs.join(format!("{n}-{label}.out"));
        let stderr = logs.join(format!("{n}-{label}.err"));
        // `ip netns exec` execs the command: the child's PID is ember's.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.net.host(host).ns])
            .arg(ember())
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        self.procs.push(Proc {
            label: label.to_string(),
            host: host.to_string(),
            child,
            ended: None,
            stdout,
            stderr,
        });
        ProcId(n)
    }

    fn start_manager(&mut self) {
        let listen = format!("{}:{MANAGER_PORT}", self.ip("a"));
        let certs = self.certs().display().to_string();
        let state = self.dir.path().join("cm-state").display().to_string();
        let id = self.spawn(
            "a",
            "cluster-manager",
            &[
                "--role",
                "cluster-manager",
                "--listen",
                &listen,
                "--name",
                "cm",
                "--certs",
                &certs,
                "--state-dir",
                &state,
            ],
        );
        let start = Instant::now();
        while !self.stdout(id).contains("listening on ember://") {
            assert!(
                self.running(id),
                "the cluster manager exited: {}",
                self.stderr(id)
            );
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no banner from the cluster manager"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn start_worker(&mut self, host: &str, name: &str) {
        let manager = self.master.trim_start_matches("ember://").to_string();
        let ip = self.ip(host);
        let certs = self.certs().display().to_string();
        let work = self.work_dir(host).display().to_string();
        self.spawn(
            host,
            &format!("worker-{name}"),
            &[
                "--role",
                "worker",
                "--cluster-manager",
                &manager,
                "--host",
                &ip,
                "--name",
                name,
                "--cores",
                "1",
                "--memory",
                "2g",
                "--certs",
                &certs,
                "--work-dir",
                &work,
            ],
        );
    }

    /// Where the worker on `host` keeps its executors' directories.
    pub fn work_dir(&self, host: &str) -> PathBuf {
        self.dir.path().join(format!("work-{host}"))
    }

    /// `ember submit ARGS JOB` on host d, in client mode, with its driver
    /// listening on host d's address.
    pub fn submit(&mut self, label: &str, args: &[&str], job: &Path) -> ProcId {
        let certs = self.certs().display().to_string();
        let master = self.master.clone();
        let driver_host = self.ip("d");
        let job = job.display().to_string();
        let mut all = vec![
            "submit",
            "--master",
            &master,
            "--certs",
            &certs,
            "--driver-host",
            &driver_host,
        ];
        all.extend_from_slice(args);
        all.push(&job);
        self.spawn("d", label, &all)
    }

    /// The PID of the worker on `host`.
    pub fn worker_pid(&self, host: &str) -> u32 {
        self.procs
            .iter()
            .find(|p| p.host == host && p.label.starts_with("worker-"))
            .map(|p| p.child.id())
            .unwrap_or_else(|| panic!("no worker on host {host}"))
    }

    pub fn pid(&self, id: ProcId) -> u32 {
        self.procs[id.0].child.id()
    }

    pub fn running(&mut self, id: ProcId) -> bool {
        let proc = &mut self.procs[id.0];
        if proc.ended.is_none() {
            proc.ended = proc.child.try_wait().unwrap();
        }
        proc.ended.is_none()
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, id: ProcId, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while self.running(id) && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.procs[id.0].ended
    }

    pub fn stdout(&self, id: ProcId) -> String {
        std::fs::read_to_string(&self.procs[id.0].stdout).unwrap_or_default()
    }

    pub fn stderr(&self, id: ProcId) -> String {
        plain(&std::fs::read_to_string(&self.procs[id.0].stderr).unwrap_or_default())
    }

    /// Waits up to `limit` for the process's stderr to contain `needle`.
    pub fn wait_for_log(&mut self, id: ProcId, needle: &str, limit: Duration) {
        let start = Instant::now();
        while !self.stderr(id).contains(needle) {
            assert!(
                self.running(id),
                "{} exited before logging '{needle}'",
                self.procs[id.0].label
            );
            assert!(
                start.elapsed() < limit,
                "{} did not log '{needle}' within {limit:?}",
                self.procs[id.0].label
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn status(&self) -> Value {
        self.probe.get().expect("the cluster manager answers")
    }

    /// Polls `ember status --json` until `check` holds.
    pub fn wait_for(&self, what: &str, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let status = self.probe.get();
            if let Some(s) = status.as_ref().filter(|s| check(s)) {
                return s.clone();
            }
            if start.elapsed() > limit {
                panic!("gave up waiting for {what}: {status:#?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes a job file.
    pub fn job(&self, name: &str, sql: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, sql).unwrap();
        path
    }

    /// Executor processes of application `app` on these hosts. Only
    /// those inside the namespaces count: application ids are a timestamp
    /// and a counter, so another cluster on this machine (another test
    /// run) can have an application of the same id.
    pub fn executors(&self, app: &str) -> Vec<u32> {
        processes("executor", app)
            .into_iter()
            .filter(|p| self.net.host_of(*p).is_some())
            .collect()
    }

    /// The id of application `name` in `status`, and the PIDs of its two
    /// executor processes, waited for.
    pub fn two_executors(&self, status: &Value, name: &str) -> (String, Vec<u32>) {
        let app = loopback::app(status, name).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let start = Instant::now();
        let mut pids = self.executors(&app);
        while pids.len() < 2 && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
            pids = self.executors(&app);
        }
        assert_eq!(pids.len(), 2, "two executor processes for {app}");
        (app, pids)
    }

    /// Starts [`LONG_JOB`] from host d on both workers and returns once its
    /// one task runs: the submit process, the application id and its two
    /// executors' PIDs.
    pub fn long_client_job(&mut self, name: &str) -> (ProcId, String, Vec<u32>) {
        let job = self.job(&format!("{name}.sql"), LONG_JOB);
        let submit = self.submit(
            name,
            &["--total-executor-cores", "2", "--name", name, "-v"],
            &job,
        );
        let status = self.wait_for("two executors", Duration::from_secs(20), |s| {
            loopback::app(s, name).is_some_and(|a| {
                a["state"] == "RUNNING" && a["executors"].as_array().is_some_and(|e| e.len() == 2)
            })
        });
        let (app, pids) = self.two_executors(&status, name);
        self.wait_for_log(submit, "stage submitted", Duration::from_secs(20));
        (submit, app, pids)
    }

    /// Live processes inside the hosts that this cluster did not start
    /// itself (executors, drivers), once every application has ended.
    pub fn strays(&mut self) -> Vec<(u32, Vec<String>)> {
        let mut ours = Vec::new();
        for i in 0..self.procs.len() {
            if self.running(ProcId(i)) {
                ours.push(self.pid(ProcId(i)));
            }
        }
        self.net
            .processes_inside()
            .into_iter()
            .filter(|p| !ours.contains(p))
            .map(|p| (p, loopback::command_line(p)))
            .collect()
    }

    /// Asserts that nothing but this cluster's own processes runs in the
    /// hosts, waiting up to `limit` for stragglers to exit.
    pub fn assert_no_strays(&mut self, limit: Duration) {
        let start = Instant::now();
        let mut strays = self.strays();
        while !strays.is_empty() && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(20));
            strays = self.strays();
        }
        assert!(strays.is_empty(), "processes left behind: {strays:?}");
    }

    /// Every worker gives all its cores back.
    pub fn wait_all_cores_free(&self) -> Value {
        self.wait_for("every core back", Duration::from_secs(10), |s| {
            s["workers"]
                .as_array()
                .is_some_and(|w| w.len() == 2 && w.iter().all(|w| w["cores_used"] == 0))
        })
    }

    /// Every process's output, and the executors' logs, for a failed test.
    fn dump_logs(&mut self) {
        eprintln!("==== netns cluster in {}", self.dir.path().display());
        for i in 0..self.procs.len() {
            let running = self.running(ProcId(i));
            let proc = &self.procs[i];
            let state = if running {
                "running".to_string()
            } else {
                format!("{:?}", proc.ended)
            };
            eprintln!(
                "==== {} on host {} (pid {}, {state})",
                proc.label,
                proc.host,
                proc.child.id()
            );
            for path in [&proc.stdout, &proc.stderr] {
                let body = plain(&std::fs::read_to_string(path).unwrap_or_default());
                let lines: Vec<&str> = body.lines().collect();
                let from = lines.len().saturating_sub(80);
                eprintln!("---- {}", path.display());
                for line in &lines[from..] {
                    eprintln!("{line}");
                }
            }
        }
        for host in ["b", "c"] {
            for file in crate::support::files_under(&self.work_dir(host)) {
                let body = plain(&std::fs::read_to_string(&file).unwrap_or_default());
                if !body.trim().is_empty() {
                    eprintln!("---- {}\n{}", file.display(), body.trim_end());
                }
            }
        }
    }
}

impl Drop for NsCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        // Clients first, then workers (which stop their executors), then
        // the manager; SIGKILL for any that do not exit within 5 s.
        for proc in self.procs.iter_mut().rev() {
            if proc.ended.is_none() && matches!(proc.child.try_wait(), Ok(None)) {
                signal(proc.child.id(), libc::SIGCONT);
                signal(proc.child.id(), libc::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline && matches!(proc.child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = proc.child.kill();
            }
            let _ = proc.child.wait();
        }
        // Then `net` drops: what is left inside is killed, and the
        // namespaces are deleted.
    }
}

/// A job long enough to be interrupted: one task scanning billions of
/// generated rows.
const LONG_JOB: &str =
    "SELECT count(*) AS n FROM generate_series(1, 50000000000) AS t(v) WHERE v % 7 = 3;\n";

/// The sample view events, by absolute path.
fn views_ddl() -> String {
    format!(
        "CREATE EXTERNAL TABLE views (event_time TIMESTAMP NOT NULL, user_id BIGINT NOT NULL, \
         video_id BIGINT NOT NULL, watch_seconds BIGINT NOT NULL, country VARCHAR NOT NULL) \
         STORED AS CSV LOCATION '{}/examples/data/views/' OPTIONS ('format.has_header' 'true');\n",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Grouped queries with shuffles: rows per country, and watch time per
/// video (ordered, so the output is one exact text).
fn grouped_queries() -> String {
    format!(
        "{}SELECT country, COUNT(*) AS views, SUM(watch_seconds) AS seconds, \
         COUNT(DISTINCT video_id) AS videos FROM views GROUP BY country ORDER BY country;\n\
         SELECT video_id, SUM(watch_seconds) / 60.0 AS minutes, COUNT(*) AS views \
         FROM views GROUP BY video_id ORDER BY minutes DESC, video_id LIMIT 20;\n",
        views_ddl()
    )
}

/// Every CSV row under `dir` but headers, sorted.
fn csv_rows_under(dir: &Path) -> Vec<String> {
    let mut rows: Vec<String> = crate::support::files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .flat_map(|p| {
            std::fs::read_to_string(&p)
                .unwrap()
                .lines()
                .skip(1)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    rows.sort();
    rows
}

/// The workers holding executors of application `name`, by worker id.
fn executor_workers(status: &Value, name: &str) -> BTreeSet<String> {
    loopback::app(status, name)
        .and_then(|a| a["executors"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|e| e["worker"].as_str().map(str::to_string))
        .collect()
}

/// The state of worker `id`.
fn worker_state(status: &Value, id: &str) -> String {
    status["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|w| w["id"] == id)
        .and_then(|w| w["state"].as_str())
        .unwrap_or("absent")
        .to_string()
}

fn both_workers() -> BTreeSet<String> {
    BTreeSet::from(["wb".to_string(), "wc".to_string()])
}

fn submit_args<'a>(name: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--format",
        "csv",
        "--total-executor-cores",
        "2",
        "--name",
        name,
        "-v",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn a_job_runs_across_three_hosts() {
    let Some(mut cluster) = NsCluster::start() else {
        return;
    };
    let copy = |dest: &Path| {
        format!(
            "{}COPY (SELECT video_id, COUNT(*) AS views, SUM(watch_seconds) AS seconds \
             FROM views GROUP BY video_id) TO '{}/' STORED AS CSV OPTIONS ('format.has_header' 'true');\n",
            grouped_queries(),
            dest.display()
        )
    };
    let local_out = cluster.dir.path().join("local-out");
    let expected = local_rows(&cluster.job("local.sql", &copy(&local_out)));
    let expected_files = csv_rows_under(&local_out);
    assert!(expected.lines().count() > 20, "{expected}");
    assert!(
        expected_files.len() > 100,
        "one row per video: {expected_files:?}"
    );

    let out_dir = cluster.dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let dest = out_dir.join("per-video");
    let job = cluster.job("across.sql", &copy(&dest));
    let started = Instant::now();
    // The first stage's first attempts wait 1 s, so that the executors
    // are still there to be seen in `ember status`: without it the whole
    // job takes less than 200 ms. It changes no rows.
    let submit = cluster.submit(
        "across",
        &submit_args("across", &["--conf", "ember.faults.delayTask=0.*:1s"]),
        &job,
    );
    // One executor on each worker host, while the job runs.
    cluster.wait_for(
        "executors of the app on both workers",
        Duration::from_secs(20),
        |s| executor_workers(s, "across") == both_workers(),
    );
    let code = cluster.wait_exit(submit, Duration::from_secs(60));
    let took = started.elapsed();
    assert!(
        code.is_some_and(|c| c.success()),
        "the job failed ({code:?}): {}",
        cluster.stderr(submit)
    );
    assert_eq!(cluster.stdout(submit), expected, "the rows of local mode");
    eprintln!("job across three hosts: {took:?}");

    let status = cluster.wait_for("the app to finish", Duration::from_secs(10), |s| {
        loopback::app(s, "across").is_some_and(|a| a["state"] == "FINISHED")
    });
    let app = loopback::app(&status, "across").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Each worker ran one executor for it (one directory per executor)...
    for host in ["b", "c"] {
        let dirs = std::fs::read_dir(cluster.work_dir(host).join(&app))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(dirs, 1, "one executor of {app} on host {host}");
    }
    // ... and both reached the driver on host d from their own address.
    let log = cluster.stderr(submit);
    for host in ["b", "c"] {
        let from = format!("role=worker addr={}:", cluster.ip(host));
        assert!(log.contains(&from), "no connection from host {host}: {log}");
    }

    // COPY wrote every row once, committed, with no staging left behind.
    let written = csv_rows_under(&dest);
    assert_eq!(written, expected_files, "the rows local mode wrote");
    let keys: BTreeSet<&str> = written.iter().filter_map(|r| r.split(',').next()).collect();
    assert_eq!(keys.len(), written.len(), "each video exactly once");
    assert!(dest.join("_SUCCESS").exists());
    let left: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["per-video".to_string()], "no staging left");

    // Executors exit with their application and give their cores back.
    assert!(wait_gone(&cluster.executors(&app), Duration::from_secs(10)).is_some());
    cluster.wait_all_cores_free();
    cluster.assert_no_strays(Duration::from_secs(5));
}

#[test]
fn a_partitioned_driver_host_leaves_no_orphan_executors() {
    let Some(mut cluster) = NsCluster::start() else {
        return;
    };
    let (client, app, pids) = cluster.long_client_job("partitioned");
    let hosts: BTreeSet<Option<String>> = pids.iter().map(|p| cluster.net.host_of(*p)).collect();
    assert_eq!(
        hosts,
        BTreeSet::from([Some("b".to_string()), Some("c".to_string())]),
        "one executor on each worker host"
    );

    // The client's host drops off the network.
    cluster.net.unplug("d");
    let cut = Instant::now();
    let gone = wait_gone(&pids, Duration::from_secs(10));
    assert!(
        gone.is_some(),
        "executors of {app} outlived the partition of their driver's host: {pids:?}"
    );
    let status = cluster.wait_for(
        "the manager to end the app and free its cores",
        Duration::from_secs(10),
        |s| {
            loopback::app(s, "partitioned").is_some_and(|a| {
                ["FINISHED", "FAILED", "KILLED"].contains(&a["state"].as_str().unwrap_or(""))
                    && a["executors"].as_array().is_some_and(|e| e.is_empty())
            }) && s["workers"]
                .as_array()
                .is_some_and(|w| w.len() == 2 && w.iter().all(|w| w["cores_used"] == 0))
        },
    );
    let ended = cut.elapsed();
    let record = loopback::app(&status, "partitioned").unwrap();
    assert_eq!(record["id"], app.as_str());
    eprintln!(
        "partition: executors gone after {:?}; app {} ({}) and cores free after {ended:?}",
        gone.unwrap(),
        record["state"],
        record["reason"]
    );
    // Only the client's host is cut off: both workers stay.
    for worker in both_workers() {
        assert_eq!(worker_state(&status, &worker), "ALIVE", "{status:#}");
    }
    cluster.assert_no_strays(Duration::from_secs(5));

    // The client, cut off from the manager and from every executor, gives
    // up on its own, with a failure (`a_partitioned_client_gives_up`
    // checks it never comes back as another application).
    let code = cluster.wait_exit(client, Duration::from_secs(20));
    assert!(
        code.is_some_and(|c| !c.success()),
        "a partitioned client must fail on its own ({code:?}): {}",
        cluster.stderr(client)
    );

    // The network is back: a new job from the same host runs.
    cluster.net.plug("d");
    let job = cluster.job("after.sql", &grouped_queries());
    let expected = local_rows(&job);
    let submit = cluster.submit(
        "after-partition",
        &submit_args("after-partition", &[]),
        &job,
    );
    let code = cluster.wait_exit(submit, Duration::from_secs(60));
    assert!(
        code.is_some_and(|c| c.success()),
        "a job after the partition failed ({code:?}): {}",
        cluster.stderr(submit)
    );
    assert_eq!(cluster.stdout(submit), expected);
    let status = cluster.wait_for("the new app to finish", Duration::from_secs(10), |s| {
        loopback::app(s, "after-partition").is_some_and(|a| a["state"] == "FINISHED")
    });
    let partitioned = status["apps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"] == "partitioned")
        .count();
    assert_eq!(partitioned, 1, "{status:#}");
    cluster.wait_all_cores_free();
    cluster.assert_no_strays(Duration::from_secs(10));
}

/// What a partitioned client should do: fail on its own within a bound,
/// and never come back as a second application.
#[test]
fn a_partitioned_client_gives_up() {
    let Some(mut cluster) = NsCluster::start() else {
        return;
    };
    let (client, app, pids) = cluster.long_client_job("given-up");
    cluster.net.unplug("d");
    assert!(wait_gone(&pids, Duration::from_secs(10)).is_some());
    let code = cluster.wait_exit(client, Duration::from_secs(15));
    let log = cluster.stderr(client);
    cluster.net.plug("d");
    // Time to come back, were it still there.
    std::thread::sleep(Duration::from_secs(3));
    let status = cluster.status();
    assert!(
        code.is_some_and(|c| !c.success()),
        "a client cut off from the manager and every executor of {app} must fail \
         within 15 s; it is {}: {log}",
        if code.is_none() {
            "still running"
        } else {
            "done, with success"
        }
    );
    let apps = status["apps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"] == "given-up")
        .count();
    assert_eq!(apps, 1, "it came back as another application: {status:#}");
}

#[test]
fn a_killed_executor_and_a_stopped_worker_on_other_hosts_are_recovered() {
    let Some(mut cluster) = NsCluster::start() else {
        return;
    };
    let job = cluster.job("faults.sql", &grouped_queries());
    let expected = local_rows(&job);

    // 1. SIGKILL the executor on host c while it holds a task: every
    // first attempt of stage 0 waits 3 s, time to kill it.
    let submit = cluster.submit(
        "killed-executor",
        &submit_args(
            "killed-executor",
            &["--conf", "ember.faults.delayTask=0.*:3s"],
        ),
        &job,
    );
    let status = cluster.wait_for("two executors", Duration::from_secs(20), |s| {
        executor_workers(s, "killed-executor") == both_workers()
    });
    let (app, pids) = cluster.two_executors(&status, "killed-executor");
    cluster.wait_for_log(submit, "stage=0 tasks=2", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        cluster.running(submit),
        "the job must still run when its executor is killed"
    );
    let victim = *pids
        .iter()
        .find(|p| cluster.net.host_of(**p).as_deref() == Some("c"))
        .unwrap_or_else(|| panic!("no executor of {app} on host c: {pids:?}"));
    signal(victim, libc::SIGKILL);
    let code = cluster.wait_exit(submit, Duration::from_secs(60));
    let log = cluster.stderr(submit);
    assert!(code.is_some_and(|c| c.success()), "({code:?}) {log}");
    assert_eq!(cluster.stdout(submit), expected, "the rows of local mode");
    assert!(log.contains("executor lost"), "{log}");
    // The manager replaced it, on host c, whose core it freed.
    let on_c = std::fs::read_dir(cluster.work_dir("c").join(&app))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(on_c, 2, "the killed executor and its replacement on host c");
    cluster.wait_for("the app to finish", Duration::from_secs(10), |s| {
        loopback::app(s, "killed-executor").is_some_and(|a| a["state"] == "FINISHED")
    });
    assert!(wait_gone(&cluster.executors(&app), Duration::from_secs(10)).is_some());
    cluster.wait_all_cores_free();
    cluster.assert_no_strays(Duration::from_secs(5));

    // 2. SIGSTOP the worker on host b while an application runs: the
    // manager declares it lost, then takes it back after SIGCONT, killing
    // the executor it already reported lost and placing a new one there.
    let (submit, app, pids) = cluster.long_client_job("stopped-worker");
    let worker_b = cluster.worker_pid("b");
    assert_eq!(cluster.net.host_of(worker_b).as_deref(), Some("b"));
    let old_b = *pids
        .iter()
        .find(|p| cluster.net.host_of(**p).as_deref() == Some("b"))
        .unwrap_or_else(|| panic!("no executor of {app} on host b: {pids:?}"));
    signal(worker_b, libc::SIGSTOP);
    let status = cluster.wait_for("worker wb to be lost", Duration::from_secs(10), |s| {
        worker_state(s, "wb") == "LOST"
            && executor_workers(s, "stopped-worker") == BTreeSet::from(["wc".to_string()])
    });
    assert_eq!(
        loopback::app(&status, "stopped-worker").unwrap()["state"],
        "RUNNING"
    );
    signal(worker_b, libc::SIGCONT);
    cluster.wait_for(
        "worker wb back, with a new executor of the app",
        Duration::from_secs(10),
        |s| {
            worker_state(s, "wb") == "ALIVE"
                && executor_workers(s, "stopped-worker") == both_workers()
        },
    );
    assert!(
        wait_gone(&[old_b], Duration::from_secs(10)).is_some(),
        "the executor reported lost still runs on host b"
    );
    // One executor process per worker host: the new one on b.
    let start = Instant::now();
    let mut now: Vec<Option<String>> = Vec::new();
    while start.elapsed() < Duration::from_secs(10) {
        now = cluster
            .executors(&app)
            .iter()
            .map(|p| cluster.net.host_of(*p))
            .collect();
        now.sort();
        if now == [Some("b".to_string()), Some("c".to_string())] {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        now,
        [Some("b".to_string()), Some("c".to_string())],
        "one executor of {app} per worker host"
    );
    assert!(cluster.running(submit), "{}", cluster.stderr(submit));
    signal(cluster.pid(submit), libc::SIGINT);
    let code = cluster.wait_exit(submit, Duration::from_secs(10));
    assert_eq!(code.and_then(|c| c.code()), Some(130));
    assert!(wait_gone(&cluster.executors(&app), Duration::from_secs(10)).is_some());
    cluster.wait_all_cores_free();
    cluster.assert_no_strays(Duration::from_secs(5));
}
