//! Every process a test runs ends within a bound: one that runs past it is
//! killed and the test fails saying which command and what it printed,
//! instead of the whole suite waiting for it.

use std::io::{self, Read};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long one command of a test may run: far beyond any the suite runs
/// (the longest take a minute or two), well inside CI's limit.
pub const COMMAND_BOUND: Duration = Duration::from_secs(600);

/// `Command::output` with a bound.
pub trait BoundedCommand {
    /// Runs the command as `output` does (no standard input, output
    /// captured); kills it and fails with a `TimedOut` error naming the
    /// command and holding what it printed when it runs past `bound`.
    fn output_within(&mut self, bound: Duration) -> io::Result<Output>;

    /// [`BoundedCommand::output_within`] [`COMMAND_BOUND`].
    fn bounded_output(&mut self) -> io::Result<Output> {
        self.output_within(COMMAND_BOUND)
    }
}

impl BoundedCommand for Command {
    fn output_within(&mut self, bound: Duration) -> io::Result<Output> {
        let what = describe(self);
        let child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        finish(child, bound, &what)
    }
}

/// `Child::wait` and `Child::wait_with_output` with a bound.
pub trait BoundedChild {
    /// Waits for the process; kills it and fails with a `TimedOut` error
    /// when it runs past `bound`.
    fn wait_within(&mut self, bound: Duration) -> io::Result<ExitStatus>;

    /// [`BoundedChild::wait_within`] [`COMMAND_BOUND`].
    fn bounded_wait(&mut self) -> io::Result<ExitStatus> {
        self.wait_within(COMMAND_BOUND)
    }

    /// `wait_with_output` within [`COMMAND_BOUND`]: on time, what it
    /// printed on the pipes it was given.
    fn bounded_wait_with_output(self) -> io::Result<Output>;
}

impl BoundedChild for Child {
    fn wait_within(&mut self, bound: Duration) -> io::Result<ExitStatus> {
        match wait_until(self, Instant::now() + bound)? {
            Some(status) => Ok(status),
            None => Err(timed_out(&format!("process {}", self.id()), bound, "")),
        }
    }

    fn bounded_wait_with_output(self) -> io::Result<Output> {
        let what = format!("process {}", self.id());
        finish(self, COMMAND_BOUND, &what)
    }
}

/// `child`'s exit status, or `None` once `deadline` passes: then it has
/// been killed and reaped.
fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Reads `child`'s piped output while it runs, for up to `bound` in all.
fn finish(mut child: Child, bound: Duration, what: &str) -> io::Result<Output> {
    let deadline = Instant::now() + bound;
    let stdout = Collected::start(child.stdout.take());
    let stderr = Collected::start(child.stderr.take());
    let printed = || {
        format!(
            "\n--- stdout ---\n{}\n--- stderr ---\n{}",
            tail(&stdout.taken()),
            tail(&stderr.taken())
        )
    };
    let Some(status) = wait_until(&mut child, deadline)? else {
        return Err(timed_out(what, bound, &printed()));
    };
    // A process it started may hold the pipes open after it ends.
    if !(stdout.wait_until(deadline) && stderr.wait_until(deadline)) {
        return Err(timed_out(
            &format!("{what} (ended {status}; something it started holds its output open)"),
            bound,
            &printed(),
        ));
    }
    Ok(Output {
        status,
        stdout: stdout.taken(),
        stderr: stderr.taken(),
    })
}

/// A pipe read to its end on a thread of its own.
struct Collected {
    bytes: Arc<Mutex<Vec<u8>>>,
    done: Option<mpsc::Receiver<()>>,
}

impl Collected {
    fn start(pipe: Option<impl Read + Send + 'static>) -> Self {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let Some(mut pipe) = pipe else {
            return Self { bytes, done: None };
        };
        let (sender, done) = mpsc::channel();
        let into = Arc::clone(&bytes);
        thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => into.lock().unwrap().extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = sender.send(());
        });
        Self {
            bytes,
            done: Some(done),
        }
    }

    /// Whether the pipe reached its end by `deadline`.
    fn wait_until(&self, deadline: Instant) -> bool {
        match &self.done {
            None => true,
            Some(done) => {
                let left = deadline.saturating_duration_since(Instant::now());
                !matches!(
                    done.recv_timeout(left),
                    Err(mpsc::RecvTimeoutError::Timeout)
                )
            }
        }
    }

    fn taken(&self) -> Vec<u8> {
        std::mem::take(&mut *self.bytes.lock().unwrap())
    }
}

fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    format!("`{}`", words.join(" "))
}

/// The last few kilobytes of `bytes`, as text.
fn tail(bytes: &[u8]) -> String {
    const SHOWN: usize = 4096;
    let text = String::from_utf8_lossy(bytes);
    match text.char_indices().rev().nth(SHOWN) {
        Some((start, _)) => format!("...{}", &text[start..]),
        None => text.into_owned(),
    }
}

fn timed_out(what: &str, bound: Duration, printed: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what} ran past {bound:?} and was killed{printed}"),
    )
}
