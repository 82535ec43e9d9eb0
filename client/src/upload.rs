//! Uploading an application binary: checked and hashed here, offered to
//! the cluster manager by its hash, and sent on a bulk stream only if the
//! manager does not hold it yet. Applications and submissions then name it
//! by its [`BinaryRef`].

use std::path::Path;
use std::time::Duration;

use ember_actors::binaries::{BinaryError, BinaryRef, check_program, chunk_schema, file_chunks};
use ember_actors::cluster_manager::ManagerError;
use ember_actors::cluster_manager::binaries::{
    FOR_UPLOADS, UPLOAD_INBOX, UploadBinary, UploadReply,
};
use ember_transport::{ActorAddress, BulkError, Mailbox, Node, NodeId, SendError};

use crate::{ASK_TIMEOUT, ClientError, ClusterClient};

/// How long the manager gets, once the bytes are sent, to check and keep
/// the binary.
const STORE_TIMEOUT: Duration = Duration::from_secs(600);

/// An uploaded binary, and what the upload sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedBinary {
    pub binary: BinaryRef,
    /// Bytes sent: 0 when the manager held the binary already.
    pub sent_bytes: u64,
}

impl ClusterClient {
    /// Uploads the program at `path`, unless the manager holds it already
    /// (then nothing is sent). Refuses at once a file that is not a
    /// regular executable ELF program.
    pub async fn upload_binary(&self, path: &Path) -> Result<UploadedBinary, ClientError> {
        let manager = self.manager().await?;
        upload_binary(&self.node, &manager.address().node, path).await
    }
}

/// [`ClusterClient::upload_binary`] from a node the caller runs (a
/// client-mode driver's), to the manager `manager` it is connected to.
pub async fn upload_binary(
    node: &Node,
    manager: &NodeId,
    path: &Path,
) -> Result<UploadedBinary, ClientError> {
    let file = path.to_path_buf();
    let binary = tokio::task::spawn_blocking(move || {
        check_program(&file).map_err(|e| ClientError::BadRequest(e.to_string()))?;
        crate::hashes::hash_file_cached(&file)
            .map_err(|e| ClientError::BadRequest(format!("cannot read {}: {e}", file.display())))
    })
    .await
    .map_err(|e| ClientError::Node(format!("cannot hash {}: {e}", path.display())))??;
    let actor = ActorAddress {
        node: manager.clone(),
        name: FOR_UPLOADS.to_string(),
    };
    let mailbox = node
        .mailbox::<UploadBinary>(&actor)
        .map_err(|e| ClientError::Unreachable(e.to_string()))?;
    let offer = UploadBinary::Offer {
        binary: binary.clone(),
    };
    let upload = match ask(&mailbox, offer, ASK_TIMEOUT).await? {
        UploadReply::Held => {
            return Ok(UploadedBinary {
                binary,
                sent_bytes: 0,
            });
        }
        UploadReply::SendAs { upload } => upload,
        other => return Err(ClientError::Unexpected(format!("{other:?}"))),
    };
    let chunks = file_chunks(path, &binary)
        .map_err(|e| ClientError::BadRequest(format!("cannot read {}: {e}", path.display())))?;
    let inbox = ActorAddress {
        node: manager.clone(),
        name: UPLOAD_INBOX.to_string(),
    };
    let sent = node
        .send_batches(&inbox, &upload, chunk_schema(), chunks)
        .await;
    // The manager's word on the upload says best what went wrong, a
    // stream it turned down included.
    let stored = ask(&mailbox, UploadBinary::Sent { upload }, STORE_TIMEOUT).await;
    match (sent, stored) {
        (_, Err(ClientError::Refused(why))) => Err(ClientError::Refused(why)),
        (Err(e), _) => Err(match e {
            BulkError::Refused { why, .. } => refused(BinaryError::Refused(why)),
            other => ClientError::Unreachable(format!("the upload broke off: {other}")),
        }),
        (Ok(_), Ok(UploadReply::Stored)) => Ok(UploadedBinary {
            sent_bytes: binary.bytes(),
            binary,
        }),
        (Ok(_), Ok(other)) => Err(ClientError::Unexpected(format!("{other:?}"))),
        (Ok(_), Err(e)) => Err(e),
    }
}

async fn ask(
    mailbox: &Mailbox<UploadBinary>,
    request: UploadBinary,
    timeout: Duration,
) -> Result<UploadReply, ClientError> {
    match mailbox.ask(request, timeout).await {
        Ok(reply) => reply.map_err(refused),
        Err(SendError::Refused(_, refusal)) => Err(refused(BinaryError::Refused(format!(
            "the cluster manager refused the upload: {refusal}"
        )))),
        Err(e) => Err(ClientError::NoAnswer(e)),
    }
}

fn refused(e: BinaryError) -> ClientError {
    ClientError::Refused(ManagerError::Binary(e))
}

impl UploadedBinary {
    /// Whether the binary at `path` was sent, in words.
    pub fn report(&self, path: &Path) -> String {
        if self.sent_bytes == 0 {
            format!(
                "application binary {} (sha256 {}): held by the cluster manager, nothing uploaded",
                path.display(),
                self.binary.sha256()
            )
        } else {
            format!(
                "application binary {} (sha256 {}): uploaded {} bytes",
                path.display(),
                self.binary.sha256(),
                self.sent_bytes
            )
        }
    }
}
