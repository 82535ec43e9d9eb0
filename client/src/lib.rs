//! A client of an Ember cluster manager: submit a cluster-mode driver,
//! read the cluster's status, kill an application or a driver, read a
//! driver's output. It knows nothing of a command line: the `ember` CLI,
//! a REST server or a test drive it the same way.
//!
//! ```no_run
//! # async fn run(creds: ember_certs::NodeCredentials) -> Result<(), ember_client::ClientError> {
//! let addr = "10.0.0.1:7077".parse().unwrap();
//! let client = ember_client::ClusterClient::connect(&creds, "report", addr, "cm").await?;
//! let status = client.status().await?;
//! println!("{} workers", status.workers.len());
//! client.close().await;
//! # Ok(())
//! # }
//! ```

pub mod hashes;
mod upload;

use std::net::SocketAddr;
use std::time::Duration;

use ember_actors::cluster_app::reach_manager;
use ember_actors::cluster_manager::upload::{
    MAX_SCRIPT_BYTES, SCRIPT_PART_BYTES, UploadError, split_script,
};
use ember_actors::cluster_manager::{
    ClientReply, ClusterStatus, DriverId, DriverJob, DriverLogs, DriverRequest, FOR_CLIENTS,
    FromClient, ManagerError, ScriptUpload,
};
use ember_certs::NodeCredentials;
use ember_transport::{Mailbox, Node, NodeOptions, SendError};
pub use upload::{
    UploadedBinary, name_side_files, upload_binary, upload_side_file, upload_side_files,
};

/// How long the manager gets to answer one request.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `ember submit` keeps sending a submission whose answer was
/// lost (the manager restarting, say): a restart and its recovery fit.
pub const SUBMIT_RESEND_LIMIT: Duration = Duration::from_secs(30);
/// Between sends of a submission whose answer was lost.
const RESEND_PAUSE: Duration = Duration::from_secs(1);

/// What can go wrong talking to a cluster manager; each kind is a
/// different thing to the caller (a REST server maps them to codes).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// This process could not start its own node.
    #[error("cannot start the client's node: {0}")]
    Node(String),
    /// The manager could not be reached (down, cut off, wrong address,
    /// or it refused this client's certificate).
    #[error("{0}")]
    Unreachable(String),
    /// The manager did not answer in time, the connection dropped, or
    /// the manager stopped.
    #[error("the cluster manager did not answer: {0}")]
    NoAnswer(SendError),
    /// The manager answered no, saying why (an unknown id, a request it
    /// cannot take); [`ManagerError::code`] tells the kinds apart.
    #[error("{0}")]
    Refused(ManagerError),
    /// The request itself is wrong before anything is sent.
    #[error("{0}")]
    BadRequest(String),
    /// An answer of another kind than the request calls for.
    #[error("unexpected answer from the cluster manager: {0}")]
    Unexpected(String),
}

/// A fresh submission token: 128 random bits, in hex.
pub fn new_token() -> Result<String, ClientError> {
    ember_actors::cluster_app::new_secret()
        .map_err(|e| ClientError::Node(format!("cannot make a submission token: {e}")))
}

impl ClientError {
    /// Whether sending the same request again may get an answer: nothing
    /// came back, as opposed to a refusal.
    pub fn is_lost(&self) -> bool {
        matches!(self, ClientError::Unreachable(_) | ClientError::NoAnswer(_))
    }

    /// A stable word for the kind of error, for a REST API or a script to
    /// map; a refusal has the manager's own code.
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::Node(_) => "client_node",
            ClientError::Unreachable(_) => "unreachable",
            ClientError::NoAnswer(SendError::Closed(_)) => "manager_gone",
            ClientError::NoAnswer(SendError::Timeout(..)) => "timeout",
            ClientError::NoAnswer(_) => "no_answer",
            ClientError::Refused(e) => e.code(),
            ClientError::BadRequest(_) => "bad_request",
            ClientError::Unexpected(_) => "unexpected",
        }
    }
}

/// Whether the manager could take `job` at all, before anything is sent.
pub fn check_job(job: &DriverJob) -> Result<(), ClientError> {
    if job.script.len() > MAX_SCRIPT_BYTES {
        let too_large = UploadError::TooLarge {
            bytes: job.script.len() as u64,
            max: MAX_SCRIPT_BYTES,
        };
        return Err(ClientError::BadRequest(format!(
            "{}: {too_large}",
            job.name
        )));
    }
    Ok(())
}

/// A client of one cluster manager, for as many requests as needed. Each
/// request goes over the node's connection to the manager, dialled again
/// if it dropped (the manager restarted, say).
pub struct ClusterClient {
    node: Node,
    addr: SocketAddr,
    host: String,
    /// Whether the node is this client's own, closed with it; a caller's
    /// node stays open.
    owns_node: bool,
}

impl ClusterClient {
    /// Opens a node with the client certificate `creds` (`instance` names
    /// it among others with the same certificate) and reaches the manager
    /// at `addr`, whose certificate names `host`. Waits out a manager that
    /// is restarting, within the bound `reach_manager` keeps.
    pub async fn connect(
        creds: &NodeCredentials,
        instance: &str,
        addr: SocketAddr,
        host: &str,
    ) -> Result<Self, ClientError> {
        let bind = if addr.is_ipv6() {
            SocketAddr::from(([0u16; 8], 0))
        } else {
            SocketAddr::from(([0u8; 4], 0))
        };
        let node = Node::start_instance(creds, Some(instance), bind, NodeOptions::default())
            .map_err(|e| ClientError::Node(e.to_string()))?;
        let client = Self {
            node,
            addr,
            host: host.to_string(),
            owns_node: true,
        };
        match client.manager().await {
            Ok(_) => Ok(client),
            Err(e) => {
                client.close().await;
                Err(e)
            }
        }
    }

    /// Reaches the manager from a node the caller started (a simulated
    /// one, or one that serves other actors too); the node stays the
    /// caller's: [`close`](Self::close) leaves it open.
    pub async fn over(node: Node, addr: SocketAddr, host: &str) -> Result<Self, ClientError> {
        let client = Self {
            node,
            addr,
            host: host.to_string(),
            owns_node: false,
        };
        client.manager().await?;
        Ok(client)
    }

    /// The manager's mailbox for people's requests, over the connection
    /// the node has to it, or a new one.
    pub(crate) async fn manager(&self) -> Result<Mailbox<FromClient>, ClientError> {
        let manager = reach_manager(&self.node, self.addr, &self.host)
            .await
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        self.node
            .mailbox::<FromClient>(&manager.actor(FOR_CLIENTS))
            .map_err(|e| ClientError::Unreachable(e.to_string()))
    }

    /// Sends one request and waits for its answer.
    pub async fn ask(&self, request: FromClient) -> Result<ClientReply, ClientError> {
        self.manager()
            .await?
            .ask(request, ASK_TIMEOUT)
            .await
            .map_err(ClientError::NoAnswer)?
            .map_err(ClientError::Refused)
    }

    /// Submits a cluster-mode driver; a script larger than one message
    /// goes ahead in acknowledged parts. Returns the driver's id. Sent
    /// again with the same `token` (see [`new_token`]) after an answer was
    /// lost, the submission is taken once.
    pub async fn submit(
        &self,
        mut job: DriverJob,
        request: DriverRequest,
        token: Option<String>,
    ) -> Result<DriverId, ClientError> {
        check_job(&job)?;
        let upload = if job.script.len() > SCRIPT_PART_BYTES {
            let script = std::mem::take(&mut job.script);
            Some(self.upload_script(&script).await?)
        } else {
            None
        };
        let request = FromClient::Submit {
            job,
            request,
            upload,
            token,
        };
        match self.ask(request).await? {
            ClientReply::Submitted(id) => Ok(id),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Submits a cluster-mode driver as [`submit`](Self::submit) does, and
    /// while no answer comes (the manager restarting, the link dropping),
    /// sends it again each second for up to `limit` (see
    /// [`SUBMIT_RESEND_LIMIT`]), under one token: the manager takes it
    /// once. `resending` hears why before each resend.
    pub async fn submit_until_answered(
        &self,
        job: DriverJob,
        request: DriverRequest,
        limit: Duration,
        mut resending: impl FnMut(&ClientError),
    ) -> Result<DriverId, ClientError> {
        check_job(&job)?;
        let token = new_token()?;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let sent = self
                .submit(job.clone(), request.clone(), Some(token.clone()))
                .await;
            match sent {
                Err(lost) if lost.is_lost() && tokio::time::Instant::now() < deadline => {
                    resending(&lost);
                    tokio::time::sleep(RESEND_PAUSE).await;
                }
                answered => return answered,
            }
        }
    }

    /// Sends a script too large for one message ahead of its submission,
    /// a part at a time, each acknowledged before the next.
    async fn upload_script(&self, script: &str) -> Result<ScriptUpload, ClientError> {
        let mut upload = None;
        let mut offset = 0u64;
        for part in split_script(script, SCRIPT_PART_BYTES) {
            let request = FromClient::UploadScript {
                upload: upload.clone(),
                offset,
                part: part.to_string(),
            };
            match self.ask(request).await? {
                ClientReply::Uploaded {
                    upload: name,
                    bytes,
                } => {
                    offset += part.len() as u64;
                    if bytes != offset {
                        return Err(ClientError::Unexpected(format!(
                            "the cluster manager holds {bytes} bytes of the script, but {offset} were sent"
                        )));
                    }
                    upload = Some(name);
                }
                other => return Err(ClientError::Unexpected(format!("{other:?}"))),
            }
        }
        Ok(ScriptUpload {
            name: upload.unwrap_or_default(),
            bytes: offset,
        })
    }

    /// The cluster: workers, applications, drivers.
    pub async fn status(&self) -> Result<ClusterStatus, ClientError> {
        match self.ask(FromClient::Status).await? {
            ClientReply::Status(status) => Ok(status),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Kills an application or a driver by id; returns what the manager
    /// did, in words.
    pub async fn kill(&self, id: &str) -> Result<String, ClientError> {
        match self.ask(FromClient::Kill { id: id.to_string() }).await? {
            ClientReply::Killed(what) => Ok(what),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The last `max_bytes` of a driver's standard output and error.
    pub async fn logs(&self, driver: &str, max_bytes: u64) -> Result<DriverLogs, ClientError> {
        let request = FromClient::Logs {
            driver: driver.to_string(),
            max_bytes,
        };
        match self.ask(request).await? {
            ClientReply::Logs(logs) => Ok(logs),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Closes this client's own node; a caller's node stays open.
    pub async fn close(self) {
        if self.owns_node {
            self.node.close(Duration::from_millis(100)).await;
        }
    }
}

/// The `ember://ADDR` a cluster manager started as a child prints on its
/// first line once it listens (`None` if it ended first). The rest of its
/// output is drained, so it never blocks on a full pipe.
pub fn manager_url(out: std::process::ChildStdout) -> Option<String> {
    let mut reader = std::io::BufReader::new(out);
    let mut line = String::new();
    let _ = std::io::BufRead::read_line(&mut reader, &mut line);
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    line.split_whitespace()
        .find(|w| w.starts_with("ember://"))
        .map(str::to_string)
}
