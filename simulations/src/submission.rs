//! A cluster-mode submission from its client's side: the `Submit` that
//! `ember submit --deploy-mode cluster --supervise` sends, then the
//! submission's status asked each second, as `ember status ID` shows it,
//! until it has ended.

use std::fmt;
use std::time::Duration;

use ember_actors::cluster_manager::{
    ClusterStatus, DriverId, DriverJob, DriverRequest, DriverStatus,
};
use ember_client::{ClientError, ClusterClient, SUBMIT_RESEND_LIMIT};

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

/// Submits `job` over the client's node and returns its id. A submit
/// whose answer was lost (the manager went down, the link dropped) is sent
/// again for up to 30 s with the same token, as `ember submit` does: the
/// manager takes it once.
pub async fn submit(client: &ClusterClient, job: DriverJob) -> Result<DriverId, ClientError> {
    client
        .submit_until_answered(job, driver_request(), SUBMIT_RESEND_LIMIT, |lost| {
            tracing::info!(%lost, "no answer to the submission; sending it again");
        })
        .await
}

/// Asks how submission `id` stands each second until it has ended, until
/// `deadline`, or until `gone` says the client's host is.
pub async fn watch(
    client: &ClusterClient,
    id: &str,
    deadline: tokio::time::Instant,
    gone: impl Fn() -> bool,
) -> Option<SubmissionEnd> {
    while tokio::time::Instant::now() < deadline && !gone() {
        if let Ok(status) = client.status().await
            && let Some(end) = SubmissionEnd::in_status(&status, id)
        {
            return Some(end);
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
    None
}
