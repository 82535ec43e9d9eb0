//! Why the cluster manager, or a worker it asks, turns a request down: typed,
//! so a caller (the CLI, a REST server, a Spark client) tells an unknown id
//! from a bad request or a worker that is away, by [`ManagerError::code`],
//! and shows the message, which says what to do next. Both cross the wire.

use serde::{Deserialize, Serialize};

use super::state::{AppId, DriverId, WorkerId};
use super::upload::UploadError;

/// The cluster manager's answer when it does not do what it was asked,
/// to a person's command, a registering driver or a registering worker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ManagerError {
    /// An application binary the request names is not here, or was refused.
    #[error("{0}")]
    Binary(#[from] crate::binaries::BinaryError),
    /// `ember kill` named neither a submission nor an application.
    #[error("no submission or application named '{id}'; `ember list` shows them")]
    UnknownId { id: String },
    /// `ember logs` named no submission this manager knows.
    #[error(
        "no submission named '{driver}'; `ember list` shows them (client-mode \
         applications print their output where they were submitted)"
    )]
    UnknownDriver { driver: DriverId },
    /// A driver registering again names an application this manager
    /// never had (its journal was discarded, or restored from an older
    /// backup).
    #[error(
        "application {app} is unknown to this cluster manager (its journal does not hold it); \
         submit the application again"
    )]
    UnknownApp { app: AppId },
    /// A driver registering again names an application another driver runs.
    #[error("application {app} belongs to another driver")]
    NotYourApp { app: AppId },
    /// A driver registering again names an application that ended while
    /// the driver was cut off: it must not come back as another.
    #[error("application {app} ended while its driver was away ({state}: {reason})")]
    AppEnded {
        app: AppId,
        state: String,
        reason: String,
    },
    /// `ember logs` of a submission no worker has run yet.
    #[error(
        "driver {driver} has not run yet ({state}); its output is kept once a worker runs it: \
         `ember status {driver}` says where it stands"
    )]
    NotStarted { driver: DriverId, state: String },
    /// `ember logs` of a driver whose worker is not connected now.
    #[error(
        "worker {worker}, which ran driver {driver}, is not connected; its logs are in that \
         worker's --work-dir, or here once it registers again"
    )]
    WorkerAway { worker: WorkerId, driver: DriverId },
    /// The worker holding a driver's logs did not answer.
    #[error("worker {worker}, which ran driver {driver}, did not answer: {why}; try again")]
    WorkerSilent {
        worker: WorkerId,
        driver: DriverId,
        why: String,
    },
    /// The worker asked on the caller's behalf said no.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// A part of a script sent ahead of its submission was not taken.
    #[error(transparent)]
    Upload(UploadError),
    /// A submission's script could not be taken (from its upload, or for
    /// its size).
    #[error("the submission was not accepted: {0}")]
    Script(UploadError),
    /// A later part of a script that does not name its upload.
    #[error(
        "a script's later parts name their upload (the answer to its first part gives the name)"
    )]
    UploadUnnamed,
    /// A submission that carries a script and names an upload too.
    #[error("a submission carries its script or names an upload, not both")]
    ScriptTwice,
    /// What was asked could not be journaled, so nothing was done.
    #[error("the cluster manager did not accept it: {0}")]
    Journal(String),
    /// The manager cannot reach back the actor that registers (its
    /// connection dropped meanwhile).
    #[error("the cluster manager cannot answer the registration ({0}); register again")]
    Unreachable(String),
}

impl ManagerError {
    /// A stable word for the kind of refusal, for a REST API or a client
    /// to map to its own codes; the message may change, this does not.
    pub fn code(&self) -> &'static str {
        match self {
            ManagerError::UnknownId { .. } => "unknown_id",
            ManagerError::UnknownDriver { .. } => "unknown_driver",
            ManagerError::UnknownApp { .. } => "unknown_app",
            ManagerError::NotYourApp { .. } => "forbidden",
            ManagerError::AppEnded { .. } => "app_ended",
            ManagerError::NotStarted { .. } => "not_started",
            ManagerError::WorkerAway { .. } | ManagerError::WorkerSilent { .. } => {
                "worker_unavailable"
            }
            ManagerError::Worker(e) => e.code(),
            ManagerError::Upload(e) | ManagerError::Script(e) => e.code(),
            ManagerError::UploadUnnamed | ManagerError::ScriptTwice => "bad_request",
            ManagerError::Journal(_) => "journal_unavailable",
            ManagerError::Unreachable(_) => "unreachable",
            ManagerError::Binary(e) => e.code(),
        }
    }
}

/// A worker's answer when it does not do what the manager asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum WorkerError {
    /// It keeps no output of that driver.
    #[error(
        "worker {worker} has no logs of {driver} (it never ran there, or its work dir was \
         cleaned)"
    )]
    NoLogs { worker: WorkerId, driver: DriverId },
    /// A part of a driver's script was not taken.
    #[error("{0}")]
    Script(UploadError),
}

impl WorkerError {
    /// A stable word for the kind of refusal (see [`ManagerError::code`]).
    pub fn code(&self) -> &'static str {
        match self {
            WorkerError::NoLogs { .. } => "no_logs",
            WorkerError::Script(e) => e.code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As the transport frames a reply: named msgpack.
    fn over_the_wire(reply: &Result<(), ManagerError>) -> Result<(), ManagerError> {
        let bytes = rmp_serde::to_vec_named(reply).unwrap();
        rmp_serde::from_slice(&bytes).unwrap()
    }

    #[test]
    fn every_kind_of_refusal_crosses_the_wire_whole_with_its_code() {
        let refusals = [
            ManagerError::UnknownId { id: "x".into() },
            ManagerError::UnknownApp {
                app: "app-1".into(),
            },
            ManagerError::AppEnded {
                app: "app-1".into(),
                state: "FAILED".into(),
                reason: "killed".into(),
            },
            ManagerError::Worker(WorkerError::NoLogs {
                worker: "w1".into(),
                driver: "driver-1".into(),
            }),
            ManagerError::Worker(WorkerError::Script(UploadError::Unknown("u".into()))),
            ManagerError::Script(UploadError::TooLarge {
                bytes: 1 << 27,
                max: 1 << 26,
            }),
            ManagerError::UploadUnnamed,
            ManagerError::Journal("disk full".into()),
        ];
        for refusal in refusals {
            let back = over_the_wire(&Err(refusal.clone()));
            assert_eq!(back, Err(refusal.clone()));
            assert_eq!(back.unwrap_err().code(), refusal.code());
        }
        assert_eq!(over_the_wire(&Ok(())), Ok(()));
    }

    #[test]
    fn codes_tell_the_caller_what_kind_of_no_it_is() {
        let unknown = ManagerError::UnknownId { id: "x".into() };
        assert_eq!(unknown.code(), "unknown_id");
        assert!(unknown.to_string().contains("`ember list` shows them"));
        let no_logs = ManagerError::from(WorkerError::NoLogs {
            worker: "w1".into(),
            driver: "driver-1".into(),
        });
        assert_eq!(no_logs.code(), "no_logs");
        assert_eq!(ManagerError::ScriptTwice.code(), "bad_request");
        let too_large = ManagerError::Script(UploadError::TooLarge {
            bytes: 1 << 27,
            max: 1 << 26,
        });
        assert_eq!(too_large.code(), "too_large");
        assert!(
            too_large
                .to_string()
                .starts_with("the submission was not accepted: ")
        );
    }
}
