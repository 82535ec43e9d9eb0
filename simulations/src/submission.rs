//! A cluster-mode submission from its client's side: the `Submit` that
//! `ember submit --deploy-mode cluster --supervise` sends, then the
//! submission's status asked each second, as `ember status ID` shows it,
//! until it has ended.

use std::fmt;
use std::time::Duration;

use ember_actors::cluster_app::reach_manager;
use ember_actors::cluster_manager::{
    ClientReply, ClusterStatus, DriverId, DriverJob, DriverRequest, DriverStatus, FOR_CLIENTS,
    FromClient,
};
use ember_actors::remote::NodeContact;
use ember_transport::Node;

/// How long the manager gets to answer one request, as `ember submit`
/// gives it.
const ASK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a submission whose answer was lost is sent again, as
/// `ember submit` does.
const SUBMIT_RETRY_LIMIT: Duration = Duration::from_secs(30);
/// How often the client asks how its submission is doing.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// What a simulated submission asks for its driver: `--driver-cores 1
/// --driver-memory 1g --supervise`.
pub fn driver_request() -> DriverRequest {
    DriverRequest {
        cores: 1,
        memory_mb: 1024,
        supervise: true,
    }
}

/// How a submission ended, as its status says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmissionEnd {
    Finished,
    Failed(String),
    Killed,
    /// The manager no longer knows it: a restored journal backup older
    /// than the submission.
    Forgotten,
}

impl SubmissionEnd {
    /// The end a submission's status shows; `None` while it is not over.
    pub fn of(status: &DriverStatus) -> Option<Self> {
        match status.state.as_str() {
            "FINISHED" => Some(SubmissionEnd::Finished),
            "FAILED" => Some(SubmissionEnd::Failed(
                status
                    .reason
                    .clone()
                    .unwrap_or_else(|| "no reason given".into()),
            )),
            "KILLED" => Some(SubmissionEnd::Killed),
            _ => None,
        }
    }

    /// How `id` stands in a cluster's status: ended, forgotten, or `None`
    /// while it runs.
    pub fn in_status(status: &ClusterStatus, id: &str) -> Option<Self> {
        match status.drivers.iter().find(|d| d.id == id) {
            Some(driver) => SubmissionEnd::of(driver),
            None => Some(SubmissionEnd::Forgotten),
        }
    }
}

impl SubmissionEnd {
    /// The end in a word, without its reason (which may name ids).
    pub fn word(&self) -> &'static str {
        match self {
            SubmissionEnd::Finished => "FINISHED",
            SubmissionEnd::Failed(_) => "FAILED",
            SubmissionEnd::Killed => "KILLED",
            SubmissionEnd::Forgotten => "FORGOTTEN",
        }
    }
}

impl fmt::Display for SubmissionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmissionEnd::Finished => f.write_str("FINISHED"),
            SubmissionEnd::Failed(why) => write!(f, "FAILED ({why})"),
            SubmissionEnd::Killed => f.write_str("KILLED"),
            SubmissionEnd::Forgotten => f.write_str("unknown to this cluster manager"),
        }
    }
}

/// Asks the manager for the cluster's status, over this node.
async fn status(node: &Node, manager: &NodeContact) -> Result<ClusterStatus, String> {
    let reached = reach_manager(node, manager.addr, &manager.host)
        .await
        .map_err(|e| e.to_string())?;
    let mailbox = node
        .mailbox::<FromClient>(&reached.actor(FOR_CLIENTS))
        .map_err(|e| e.to_string())?;
    match mailbox.ask(FromClient::Status, ASK_TIMEOUT).await {
        Ok(Ok(ClientReply::Status(status))) => Ok(status),
        Ok(Ok(other)) => Err(format!("unexpected answer: {other:?}")),
        Ok(Err(refused)) => Err(refused.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Submits `job` and returns its id. A submit whose answer was lost (the
/// manager went down, the link dropped) is sent again for up to 30 s with
/// the same token, as `ember submit` does: the manager takes it once.
pub async fn submit(
    node: &Node,
    manager: &NodeContact,
    job: DriverJob,
) -> Result<DriverId, String> {
    let token = ember_actors::cluster_app::new_secret().map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + SUBMIT_RETRY_LIMIT;
    loop {
        let sent = async {
            let reached = reach_manager(node, manager.addr, &manager.host)
                .await
                .map_err(|e| e.to_string())?;
            let mailbox = node
                .mailbox::<FromClient>(&reached.actor(FOR_CLIENTS))
                .map_err(|e| e.to_string())?;
            let submit = FromClient::Submit {
                job: job.clone(),
                request: driver_request(),
                upload: None,
                token: Some(token.clone()),
            };
            mailbox
                .ask(submit, ASK_TIMEOUT)
                .await
                .map_err(|e| e.to_string())
        };
        match sent.await {
            Ok(Ok(ClientReply::Submitted(id))) => return Ok(id),
            Ok(Ok(other)) => return Err(format!("unexpected answer: {other:?}")),
            Ok(Err(refused)) => return Err(format!("the submission was refused: {refused}")),
            Err(lost) if tokio::time::Instant::now() < deadline => {
                tracing::info!(%lost, "no answer to the submission; sending it again");
                tokio::time::sleep(WATCH_EVERY).await;
            }
            Err(lost) => return Err(lost),
        }
    }
}

/// Asks how submission `id` stands each second until it has ended, until
/// `deadline`, or until `gone` says the client's host is.
pub async fn watch(
    node: &Node,
    manager: &NodeContact,
    id: &str,
    deadline: tokio::time::Instant,
    gone: impl Fn() -> bool,
) -> Option<SubmissionEnd> {
    while tokio::time::Instant::now() < deadline && !gone() {
        if let Ok(status) = status(node, manager).await
            && let Some(end) = SubmissionEnd::in_status(&status, id)
        {
            return Some(end);
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
    None
}
