//! A Kafka-compatible broker on loopback for the streaming tests and
//! benchmark: `tansu` (from crates.io, in-memory storage), installed under
//! the target directory the first time it is needed, and an independent
//! producer and consumer (`kafka-python`, from PyPI, in a venv beside it).
//! Nothing is skipped when a tool is missing: it is installed, or the
//! fixture panics saying what failed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{BoundedChild, BoundedCommand};

/// The broker's crate and version, and the storage it is built with.
const TANSU: &str = "tansu@0.6.0";
const TANSU_FEATURES: &str = "dynostore";

/// The producer and consumer's package.
const KAFKA_PYTHON: &str = "kafka-python==2.3.3";

/// Where the tools are installed: `EMBER_TOOLS`, or `dir`.
fn tools(dir: &Path) -> PathBuf {
    std::env::var_os("EMBER_TOOLS").map_or_else(|| dir.join("tools"), PathBuf::from)
}

/// Runs `install` once across concurrent test processes and threads: the
/// first to take the lock file installs, the others wait for it.
fn once(tools: &Path, what: &str, done: &Path, install: impl FnOnce()) {
    if done.exists() {
        return;
    }
    std::fs::create_dir_all(tools).unwrap();
    let lock = std::fs::File::create(tools.join(format!("{what}.lock"))).unwrap();
    // SAFETY: flock on a file descriptor this function owns.
    let locked = unsafe {
        use std::os::fd::AsRawFd;
        libc::flock(lock.as_raw_fd(), libc::LOCK_EX)
    };
    assert_eq!(locked, 0, "cannot lock {}", tools.display());
    if !done.exists() {
        install();
    }
}

/// How the broker is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// Unoptimised, in about 5 minutes on two cores instead of 8: the
    /// tests send it a few thousand records.
    Tests,
    /// Optimised, so the benchmark measures Ember and not the broker.
    Benchmarks,
}

/// The `tansu` binary: on `PATH`, or installed under the tools directory
/// (the same way `scripts/test` installs it for tests).
pub fn tansu(dir: &Path, build: Build) -> PathBuf {
    if let Ok(found) = which("tansu") {
        return found;
    }
    let tools = tools(dir);
    let root = match build {
        Build::Tests => tools.clone(),
        Build::Benchmarks => tools.join("optimised"),
    };
    let binary = root.join("bin/tansu");
    once(&tools, "tansu", &binary, || {
        eprintln!(
            "installing the tansu Kafka broker from crates.io into {} ...",
            root.display()
        );
        let mut install = Command::new(env!("CARGO"));
        install
            .args(["install", "--locked", "--quiet", TANSU])
            .args(["--features", TANSU_FEATURES])
            .arg("--root")
            .arg(&root)
            .arg("--target-dir")
            .arg(root.join("build"));
        match build {
            Build::Tests => install
                .arg("--debug")
                .env("CARGO_PROFILE_DEV_DEBUG", "0")
                .env("CARGO_INCREMENTAL", "0"),
            Build::Benchmarks => install
                .env("CARGO_PROFILE_RELEASE_LTO", "false")
                .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
                .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1")
                .env("CARGO_PROFILE_RELEASE_DEBUG", "0"),
        };
        let status = install.status().expect("cannot run cargo install");
        assert!(status.success(), "cargo install {TANSU} failed");
        let _ = std::fs::remove_dir_all(root.join("build"));
    });
    binary
}

fn which(program: &str) -> Result<PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}

/// A Python with `kafka-python`, in a venv under `dir/tools`.
pub fn python(dir: &Path) -> PathBuf {
    let tools = tools(dir);
    let venv = tools.join("kafka-venv");
    let mut python = venv.join("bin/python");
    once(&tools, "kafka-venv", &venv.join(".ember-installed"), || {
        python = crate::python_venv(&venv, KAFKA_PYTHON);
    });
    python
}

/// A broker on a loopback port, stopped (by PID) when dropped.
pub struct Broker {
    child: Child,
    pub port: u16,
    tansu: PathBuf,
    python: PathBuf,
}

impl Broker {
    /// Starts a broker built for `build` (installing it and the Python
    /// client first if need be) and waits until it takes connections.
    pub fn start(dir: &Path, build: Build) -> Self {
        let tansu = tansu(dir, build);
        let python = python(dir);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start tansu");
        let broker = Self {
            child,
            port,
            tansu,
            python,
        };
        let began = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                began.elapsed() < Duration::from_secs(20),
                "the tansu broker did not listen on {port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let out = Command::new(&self.tansu)
            .args([
                "topic",
                "create",
                topic,
                "--partitions",
                &partitions.to_string(),
            ])
            .arg("--broker")
            .arg(format!("tcp://{}", self.address()))
            .bounded_output()
            .unwrap();
        assert!(
            out.status.success(),
            "creating topic {topic}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Produces `(key, value)` records to `topic` with kafka-python,
    /// acknowledged by the broker before this returns.
    pub fn produce(&self, topic: &str, records: &[(String, String)]) {
        let script = r#"
import json, sys
from kafka import KafkaProducer
address, topic = sys.argv[1], sys.argv[2]
producer = KafkaProducer(bootstrap_servers=address, acks=1, linger_ms=5)
for line in sys.stdin:
    key, value = json.loads(line)
    producer.send(topic, key=key.encode(), value=value.encode())
producer.flush(timeout=30)
producer.close(timeout=30)
"#;
        let input: String = records
            .iter()
            .map(|r| serde_json::to_string(&[&r.0, &r.1]).unwrap() + "\n")
            .collect();
        let out = self.python_run(script, &[topic], &input);
        assert!(out.is_empty(), "{out}");
    }

    /// Every record of `topic`, read with kafka-python from the start:
    /// `(partition, offset, key, value, headers as "k=v;...")`.
    pub fn consume(&self, topic: &str) -> Vec<serde_json::Value> {
        let script = r#"
import json, sys
from kafka import KafkaConsumer
address, topic = sys.argv[1], sys.argv[2]
consumer = KafkaConsumer(topic, bootstrap_servers=address, auto_offset_reset="earliest",
                         enable_auto_commit=False, consumer_timeout_ms=3000)
for r in consumer:
    print(json.dumps({"partition": r.partition, "offset": r.offset,
                      "key": r.key.decode() if r.key is not None else None,
                      "value": r.value.decode() if r.value is not None else None,
                      "headers": {k: v.decode() for k, v in (r.headers or [])}}))
consumer.close()
"#;
        self.python_run(script, &[topic], "")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn python_run(&self, script: &str, args: &[&str], input: &str) -> String {
        let mut child = Command::new(&self.python)
            .arg("-c")
            .arg(script)
            .arg(self.address())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.bounded_wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kafka-python: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
