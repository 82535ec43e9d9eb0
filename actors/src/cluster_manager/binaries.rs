//! The cluster manager's application binaries. A client uploads a binary
//! once ([`UploadBinary`], client certificates only): it offers the hash,
//! and sends the bytes on a bulk stream only if the manager does not hold
//! them yet. The manager keeps it as `STATE_DIR/binaries/<sha256>` once its
//! size and hash are checked, and sends it to a worker that needs it to
//! launch an executor or a driver ([`FetchBinary`], worker certificates
//! only). Applications and submissions may name only binaries it holds.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;
use ember_transport::{Access, ActorAddress};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::ClusterManager;
use crate::binaries::{
    BinaryDir, BinaryError, BinaryRef, SideFile, chunk_schema, file_chunks, receive,
};
use crate::remote::hub::BulkHub;

/// Actor names on the manager's node: uploads from clients, fetches from
/// workers.
pub const FOR_UPLOADS: &str = "cluster-manager/binary-uploads";
pub const FOR_FETCHES: &str = "cluster-manager/binary-fetches";
/// The bulk inbox uploads arrive at.
pub const UPLOAD_INBOX: &str = "cluster-manager/binaries";
/// How long a transfer waits for its stream to start, or for its next
/// chunk, before it is given up.
pub const TRANSFER_IDLE: Duration = Duration::from_secs(30);
/// How long the outcome of an upload is kept for a client that has not
/// asked for it yet.
const OUTCOME_KEPT: Duration = Duration::from_secs(60);

/// From a client (client certificates only).
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "Result<UploadReply, BinaryError>")]
pub enum UploadBinary {
    /// Offers a binary by hash: answered [`UploadReply::Held`] if the
    /// manager has it, else [`UploadReply::SendAs`].
    Offer { binary: BinaryRef },
    /// The stream of upload `upload` is sent: answered
    /// [`UploadReply::Stored`] once the binary is checked and kept.
    Sent { upload: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UploadReply {
    /// The manager holds the binary already: nothing to send.
    Held,
    /// Send the binary as a bulk stream to [`UPLOAD_INBOX`], tagged
    /// `upload`, then say [`UploadBinary::Sent`].
    SendAs { upload: String },
    /// The binary is kept under its hash.
    Stored,
}

/// From a worker (worker certificates only): send `binary` as a bulk
/// stream tagged `tag` to the worker's inbox `reply_to`. Answered once it
/// is sent.
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "Result<(), BinaryError>")]
pub struct FetchBinary {
    pub binary: BinaryRef,
    pub reply_to: ActorAddress,
    pub tag: String,
}

type Outcome = Result<UploadReply, BinaryError>;

enum UploadSlot {
    /// The stream is on its way; the client may wait for the outcome.
    Receiving(Option<oneshot::Sender<Outcome>>),
    /// Over, its client not having asked yet.
    Done(Outcome),
}

/// The manager's store of binaries and the uploads under way.
pub struct ManagerBinaries {
    dir: BinaryDir,
    hub: Option<BulkHub>,
    uploads: BTreeMap<String, UploadSlot>,
}

impl ClusterManager {
    /// Keeps application binaries in `dir`; without it the manager refuses
    /// uploads and applications that name a binary.
    pub fn with_binaries(mut self, dir: BinaryDir) -> Self {
        self.binaries = Some(ManagerBinaries {
            dir,
            hub: None,
            uploads: BTreeMap::new(),
        });
        self
    }

    /// Takes uploads and fetches, if the manager keeps binaries; called
    /// when the actor starts.
    pub(super) fn serve_binaries(&mut self, ctx: &mut Context<Self>) -> Result<(), String> {
        use ember_certs::Role;
        let Some(binaries) = self.binaries.as_mut() else {
            return Ok(());
        };
        let hub =
            BulkHub::open_expected_only(&self.node, UPLOAD_INBOX).map_err(|e| e.to_string())?;
        binaries.hub = Some(hub);
        let me = ctx.address();
        let uploads = self.node.register(
            FOR_UPLOADS,
            me.clone().recipient::<UploadBinary>(),
            Access::Roles(vec![Role::Client]),
        );
        let fetches = self.node.register(
            FOR_FETCHES,
            me.recipient::<FetchBinary>(),
            Access::Roles(vec![Role::Worker]),
        );
        for registration in [uploads, fetches] {
            self.registrations
                .push(registration.map_err(|e| e.to_string())?);
        }
        tracing::info!(dir = %binaries.dir.dir().display(), max_bytes = binaries.dir.max_bytes(), "keeping application binaries");
        Ok(())
    }

    /// Whether an application or submission may name `binary`: only one
    /// this manager holds.
    pub(super) fn check_binary(&self, binary: Option<&BinaryRef>) -> Result<(), BinaryError> {
        let Some(binary) = binary else {
            return Ok(());
        };
        let binaries = self.binaries.as_ref().ok_or(BinaryError::NoStore)?;
        if binaries.dir.holds(binary) {
            Ok(())
        } else {
            Err(BinaryError::NotHeld(binary.sha256().to_string()))
        }
    }

    /// Refuses side files this manager does not hold.
    pub(super) fn check_files(&self, files: &[SideFile]) -> Result<(), BinaryError> {
        files
            .iter()
            .try_for_each(|f| self.check_binary(Some(f.content())))
    }

    fn offer(&mut self, binary: BinaryRef, ctx: &mut Context<Self>) -> Outcome {
        let binaries = self.binaries.as_mut().ok_or(BinaryError::NoStore)?;
        binaries.dir.admit(&binary)?;
        if binaries.dir.holds(&binary) {
            tracing::info!(%binary, "application binary offered; already held");
            return Ok(UploadReply::Held);
        }
        let hub = binaries.hub.clone().ok_or(BinaryError::NoStore)?;
        let secret = crate::cluster_app::new_secret().map_err(|e| BinaryError::Io {
            what: "cannot name an upload".into(),
            why: e.to_string(),
        })?;
        let upload = format!("binary-upload-{secret}");
        let staged = binaries.dir.stage(&binary)?;
        let arriving = hub.expect(&upload);
        binaries
            .uploads
            .insert(upload.clone(), UploadSlot::Receiving(None));
        tracing::info!(%binary, %upload, "application binary offered; waiting for its bytes");
        let sha256 = binary.sha256().to_string();
        let tag = upload.clone();
        let take = async move {
            let batches = match tokio::time::timeout(TRANSFER_IDLE, arriving).await {
                Ok(Ok(batches)) => batches,
                _ => {
                    hub.forget(&tag);
                    return Err(BinaryError::Interrupted {
                        sha256,
                        why: format!("its stream did not start within {TRANSFER_IDLE:?}"),
                    });
                }
            };
            receive(staged, batches, TRANSFER_IDLE).await
        };
        let reply = UploadReply::SendAs {
            upload: upload.clone(),
        };
        ctx.spawn(take.into_actor(self).map(move |kept, act, ctx| {
            act.upload_ended(upload, binary, kept.map(|_| UploadReply::Stored), ctx);
        }));
        Ok(reply)
    }

    fn upload_ended(
        &mut self,
        upload: String,
        binary: BinaryRef,
        outcome: Outcome,
        ctx: &mut Context<Self>,
    ) {
        match &outcome {
            Ok(_) => tracing::info!(%binary, "application binary stored"),
            Err(e) => tracing::warn!(%binary, error = %e, "application binary not stored"),
        }
        let Some(binaries) = self.binaries.as_mut() else {
            return;
        };
        match binaries.uploads.remove(&upload) {
            Some(UploadSlot::Receiving(Some(waiter))) => {
                let _ = waiter.send(outcome);
            }
            _ => {
                binaries
                    .uploads
                    .insert(upload.clone(), UploadSlot::Done(outcome));
                ctx.notify_later(ForgetUpload(upload), OUTCOME_KEPT);
            }
        }
    }

    fn sent(&mut self, upload: String) -> ResponseFuture<Outcome> {
        let Some(binaries) = self.binaries.as_mut() else {
            return Box::pin(async { Err(BinaryError::NoStore) });
        };
        match binaries.uploads.remove(&upload) {
            Some(UploadSlot::Done(outcome)) => Box::pin(async move { outcome }),
            Some(UploadSlot::Receiving(_)) => {
                let (tx, rx) = oneshot::channel();
                binaries
                    .uploads
                    .insert(upload.clone(), UploadSlot::Receiving(Some(tx)));
                Box::pin(async move { rx.await.unwrap_or(Err(BinaryError::UnknownUpload(upload))) })
            }
            None => Box::pin(async move { Err(BinaryError::UnknownUpload(upload)) }),
        }
    }
}

impl Handler<UploadBinary> for ClusterManager {
    type Result = ResponseFuture<Outcome>;

    fn handle(&mut self, msg: UploadBinary, ctx: &mut Context<Self>) -> Self::Result {
        match msg {
            UploadBinary::Offer { binary } => {
                let reply = self.offer(binary, ctx);
                Box::pin(async move { reply })
            }
            UploadBinary::Sent { upload } => self.sent(upload),
        }
    }
}

impl Handler<FetchBinary> for ClusterManager {
    type Result = ResponseFuture<Result<(), BinaryError>>;

    fn handle(&mut self, msg: FetchBinary, _ctx: &mut Context<Self>) -> Self::Result {
        let FetchBinary {
            binary,
            reply_to,
            tag,
        } = msg;
        let node = self.node.clone();
        let chunks = self.check_binary(Some(&binary)).and_then(|()| {
            // Binaries go to workers only, never to an address a worker names
            // elsewhere.
            let to_a_worker = node
                .peers()
                .iter()
                .any(|(id, who)| *id == reply_to.node && who.role == ember_certs::Role::Worker);
            if !to_a_worker {
                return Err(BinaryError::Refused(format!(
                    "{} is not a connected worker",
                    reply_to.node
                )));
            }
            let path = self
                .binaries
                .as_ref()
                .map(|b| b.dir.path_of(&binary))
                .ok_or(BinaryError::NoStore)?;
            file_chunks(&path, &binary).map_err(|e| BinaryError::Io {
                what: format!("cannot read {}", path.display()),
                why: e.to_string(),
            })
        });
        Box::pin(async move {
            let chunks = chunks?;
            tracing::info!(%binary, to = %reply_to.node, "sending an application binary to a worker");
            node.send_batches(&reply_to, &tag, chunk_schema(), chunks)
                .await
                .map(|_| ())
                .map_err(|e| BinaryError::Interrupted {
                    sha256: binary.sha256().to_string(),
                    why: e.to_string(),
                })
        })
    }
}

/// A self-addressed clean-up: the outcome of an upload its client never
/// asked for is dropped.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct ForgetUpload(String);

impl Handler<ForgetUpload> for ClusterManager {
    type Result = ();

    fn handle(&mut self, msg: ForgetUpload, _ctx: &mut Context<Self>) {
        if let Some(binaries) = self.binaries.as_mut()
            && matches!(binaries.uploads.get(&msg.0), Some(UploadSlot::Done(_)))
        {
            binaries.uploads.remove(&msg.0);
        }
    }
}
