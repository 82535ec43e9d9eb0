//! A probe node (`ember probe-node`) in a child process, for the transport
//! tests and benchmark: a real peer on the other side of a QUIC connection.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// A probe node in a child process, for tests and benchmarks. Dropping it
/// closes the child's standard input, which ends it; a child that has not
/// ended after 5 s is killed by its PID.
pub struct ProbeChild {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Where the probe node listens.
    pub addr: SocketAddr,
}

impl ProbeChild {
    /// Starts `ember probe-node` from the binary at `ember` as node `name`
    /// with certificates from `certs`, plus `extra` arguments, and waits
    /// (up to a minute) for it to say where it listens.
    pub fn spawn(ember: &Path, certs: &Path, name: &str, extra: &[&str]) -> std::io::Result<Self> {
        let mut child = Command::new(ember)
            .args(["probe-node", "--certs"])
            .arg(certs)
            .args(["--name", name])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            if let Some(stdout) = stdout {
                let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            }
            let _ = tx.send(line);
        });
        let mut probe = Self {
            child,
            stdin,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        probe.addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "the probe node did not say where it listens (first line {line:?})"
                ))
            })?;
        Ok(probe)
    }

    /// SIGKILL: no goodbye, no close frame.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()
    }

    /// Closes the child's standard input and says how it ended.
    pub fn stop(&mut self) -> String {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => return format!("exited ({status}) after its stdin closed"),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return format!("cannot be waited for: {e}"),
            }
        }
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(status) => format!("killed by PID {} after 5 s ({status})", self.child.id()),
            Err(e) => format!("cannot be waited for: {e}"),
        }
    }
}

impl Drop for ProbeChild {
    fn drop(&mut self) {
        self.stop();
    }
}
