//! The processes a worker runs: what each is told on its standard input
//! (never on the command line, where other users could read the secret),
//! and how it is started so it cannot outlive the worker.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix::Recipient;
use serde::{Deserialize, Serialize};

use super::{ChildExited, ChildKey, Launcher, RunningProcess};
use crate::cluster_manager::{AppId, DriverId, DriverJob, ExecutorNo};
use crate::remote::NodeContact;

/// Starts children as processes, each watched by a thread that reports its
/// exit: of the `ember` binary, or of an application's own.
pub struct ProcessLauncher {
    /// The program a launch that names none runs: the worker's own.
    pub program: PathBuf,
}

struct ChildProcess {
    pid: u32,
    /// Held open: a child sees end-of-file when the worker is gone.
    _stdin: ChildStdin,
    /// Set once the child is reaped, so its pid is never signalled after.
    reaped: Arc<AtomicBool>,
}

impl RunningProcess for ChildProcess {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn kill(&self) {
        if !self.reaped.load(Ordering::Acquire) {
            kill(self.pid);
        }
    }
}

impl Launcher for ProcessLauncher {
    fn launch(
        &mut self,
        key: &ChildKey,
        program: Option<&Path>,
        args: &[String],
        dir: &Path,
        spec: &ChildSpec,
        exited: Recipient<ChildExited>,
    ) -> std::io::Result<Box<dyn RunningProcess>> {
        let program = program.unwrap_or(&self.program);
        let started = launch(program, args, dir, spec)?;
        let pid = started.child.id();
        let reaped = Arc::new(AtomicBool::new(false));
        let watch_key = key.clone();
        let watch_reaped = Arc::clone(&reaped);
        let mut process = started.child;
        let watcher = std::thread::Builder::new()
            .name(format!("ember-wait-{pid}"))
            .spawn(move || {
                let status = process.wait();
                watch_reaped.store(true, Ordering::Release);
                let (code, why) = describe_exit(&status);
                exited.do_send(ChildExited {
                    key: watch_key,
                    pid,
                    code,
                    why,
                });
            });
        if let Err(e) = watcher {
            kill(pid);
            return Err(std::io::Error::other(format!(
                "cannot watch child {pid}, so it was killed: {e}"
            )));
        }
        Ok(Box::new(ChildProcess {
            pid,
            _stdin: started.stdin,
            reaped,
        }))
    }
}

/// Everything a child process needs to start, written to its stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ChildSpec {
    Executor {
        node: NodeSpec,
        app: AppId,
        executor: ExecutorNo,
        cores: u32,
        /// The executor's memory budget (`--executor-memory`); 0: none.
        #[serde(default)]
        memory_mb: u64,
        driver: NodeContact,
        secret: String,
    },
    Driver {
        node: NodeSpec,
        driver: DriverId,
        job: DriverJob,
        manager: NodeContact,
    },
}

/// The node a child runs: the worker's certificate, an instance name of
/// its own, and the host it listens on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeSpec {
    pub certs: PathBuf,
    pub cert_name: String,
    pub instance: String,
    pub host: String,
    /// Transport and engine settings the worker was started with.
    pub conf: Vec<(String, String)>,
}

/// Largest spec a child accepts: a driver's spec carries its script, of
/// up to 64 MiB, and some settings.
const MAX_SPEC: u32 = 80 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(
        "no launch spec on standard input: {0} (this role is started by a worker, not by hand)"
    )]
    Read(std::io::Error),
    #[error("the launch spec on standard input is {0} bytes, more than allowed")]
    TooLarge(u32),
    #[error("the launch spec on standard input is unreadable: {0}")]
    Decode(String),
}

/// Reads a spec from a child's standard input.
pub fn read_spec(input: &mut impl Read) -> Result<ChildSpec, SpecError> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len).map_err(SpecError::Read)?;
    let len = u32::from_le_bytes(len);
    if len > MAX_SPEC {
        return Err(SpecError::TooLarge(len));
    }
    let mut bytes = vec![0; len as usize];
    input.read_exact(&mut bytes).map_err(SpecError::Read)?;
    rmp_serde::from_slice(&bytes).map_err(|e| SpecError::Decode(e.to_string()))
}

fn write_spec(output: &mut impl Write, spec: &ChildSpec) -> std::io::Result<()> {
    let bytes = rmp_serde::to_vec_named(spec).map_err(std::io::Error::other)?;
    let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
    output.write_all(&len.to_le_bytes())?;
    output.write_all(&bytes)?;
    output.flush()
}

/// A started child: its process (to wait on) and its stdin, which the
/// worker holds open for as long as it lives.
pub struct Started {
    pub child: Child,
    pub stdin: ChildStdin,
}

/// Starts `program args...` in `dir` with stdout and stderr in files
/// there, and hands it `spec` on stdin.
pub fn launch(
    program: &Path,
    args: &[String],
    dir: &Path,
    spec: &ChildSpec,
) -> std::io::Result<Started> {
    // Owner-only: a job's output and logs are its user's.
    crate::owner_only::create_dir(dir)?;
    let stdout = crate::owner_only::create_file(&dir.join("stdout"))?;
    let stderr = crate::owner_only::create_file(&dir.join("stderr"))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(stderr);
    die_with_parent(&mut command, libc::SIGKILL);
    let mut child = command.spawn()?;
    let Some(mut stdin) = child.stdin.take() else {
        let _ = child.kill();
        return Err(std::io::Error::other("the child has no stdin"));
    };
    if let Err(e) = write_spec(&mut stdin, spec) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok(Started { child, stdin })
}

/// On Linux the kernel sends the child `signal` when its parent dies,
/// whatever way: a worker's children get SIGKILL.
#[cfg(target_os = "linux")]
pub fn die_with_parent(command: &mut Command, signal: i32) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub fn die_with_parent(_command: &mut Command, _signal: i32) {}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: i32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory effects.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Sends SIGKILL to `pid`.
pub fn kill(pid: u32) {
    signal(pid, libc::SIGKILL);
}

/// How a child ended, in words, and its exit code if it had one.
pub fn describe_exit(status: &std::io::Result<std::process::ExitStatus>) -> (Option<i32>, String) {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => (Some(code), format!("exited with code {code}")),
            (None, Some(signal)) => (None, format!("killed by signal {signal}")),
            _ => (None, "ended".to_string()),
        },
        Err(e) => (None, format!("could not be waited on: {e}")),
    }
}

/// The last `max_bytes` of a file, and whether its start was cut.
pub fn tail(path: &Path, max_bytes: u64) -> (String, bool) {
    use std::io::Seek;
    let Ok(mut file) = std::fs::File::open(path) else {
        return (String::new(), false);
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max_bytes);
    if file.seek(std::io::SeekFrom::Start(start)).is_err() {
        return (String::new(), false);
    }
    let mut bytes = Vec::new();
    let _ = file.take(max_bytes).read_to_end(&mut bytes);
    (String::from_utf8_lossy(&bytes).into_owned(), start > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn driver_spec() -> ChildSpec {
        ChildSpec::Driver {
            node: NodeSpec {
                certs: "/c".into(),
                cert_name: "w1".into(),
                instance: "driver-1".into(),
                host: "127.0.0.1".into(),
                conf: vec![],
            },
            driver: "driver-1".into(),
            job: DriverJob {
                name: "j".into(),
                script: "SELECT 1;".into(),
                conf: vec![],
                executor_cores: 1,
                executor_memory_mb: 512,
                max_cores: None,
                args: vec![],
                base_dir: None,
                binary: None,
                files: vec![],
            },
            manager: NodeContact {
                node: ember_transport::NodeId("cm".into()),
                addr: "127.0.0.1:7077".parse().unwrap(),
                host: "127.0.0.1".into(),
            },
        }
    }

    #[test]
    fn a_spec_survives_the_pipe_and_garbage_is_an_error() {
        let spec = driver_spec();
        let mut bytes = Vec::new();
        write_spec(&mut bytes, &spec).unwrap();
        let back = read_spec(&mut bytes.as_slice()).unwrap();
        assert!(matches!(back, ChildSpec::Driver { driver, .. } if driver == "driver-1"));

        let e = read_spec(&mut [1u8, 2].as_slice()).unwrap_err().to_string();
        assert!(e.contains("started by a worker"), "{e}");
        let e = read_spec(&mut [0xff, 0xff, 0xff, 0xff].as_slice())
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than allowed"), "{e}");
        let mut junk = 3u32.to_le_bytes().to_vec();
        junk.extend([0xc1, 0xc1, 0xc1]);
        assert!(matches!(
            read_spec(&mut junk.as_slice()),
            Err(SpecError::Decode(_))
        ));
    }

    #[test]
    fn a_childs_directory_and_logs_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("app-1").join("0");
        let spec = driver_spec();
        let args = ["-c".to_string(), "cat >/dev/null".to_string()];
        let mut started = launch(Path::new("/bin/sh"), &args, &dir, &spec).unwrap();
        drop(started.stdin);
        started.child.wait().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("stdout")), 0o600);
        assert_eq!(mode(&dir.join("stderr")), 0o600);
    }

    #[test]
    fn tail_keeps_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "0123456789").unwrap();
        assert_eq!(tail(&path, 4), ("6789".to_string(), true));
        assert_eq!(tail(&path, 100), ("0123456789".to_string(), false));
        assert_eq!(tail(&dir.path().join("none"), 4), (String::new(), false));
    }
}
