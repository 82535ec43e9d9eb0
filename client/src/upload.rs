//! Uploading an application binary: checked and hashed here, offered to
//! the cluster manager by its hash, and sent on a bulk stream only if the
//! manager does not hold it yet. Applications and submissions then name it
//! by its [`BinaryRef`].

use std::path::Path;
use std::time::Duration;

use ember_actors::binaries::{
    BinaryError, BinaryRef, SideFile, check_program, chunk_schema, file_chunks,
};
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

    /// Uploads named side files; see [`upload_side_files`].
    pub async fn upload_side_files(
        &self,
        files: &[(String, std::path::PathBuf)],
    ) -> Result<(Vec<SideFile>, Vec<String>), ClientError> {
        let manager = self.manager().await?;
        upload_side_files(&self.node, &manager.address().node, files).await
    }
}

/// [`ClusterClient::upload_binary`] from a node the caller runs (a
/// client-mode driver's), to the manager `manager` it is connected to.
pub async fn upload_binary(
    node: &Node,
    manager: &NodeId,
    path: &Path,
) -> Result<UploadedBinary, ClientError> {
    upload(node, manager, path, true).await
}

/// Uploads a side file (`--files`) as [`upload_binary`] does a program:
/// by its content, sent only if the manager does not hold it yet.
pub async fn upload_side_file(
    node: &Node,
    manager: &NodeId,
    path: &Path,
) -> Result<UploadedBinary, ClientError> {
    upload(node, manager, path, false).await
}

async fn upload(
    node: &Node,
    manager: &NodeId,
    path: &Path,
    program: bool,
) -> Result<UploadedBinary, ClientError> {
    let file = path.to_path_buf();
    let binary = tokio::task::spawn_blocking(move || {
        if program {
            check_program(&file).map_err(|e| ClientError::BadRequest(e.to_string()))?;
        }
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
        self.report_as("application binary", path)
    }

    /// Whether the file at `path`, a `what`, was sent, in words.
    pub fn report_as(&self, what: &str, path: &Path) -> String {
        if self.sent_bytes == 0 {
            format!(
                "{what} {} (sha256 {}): held by the cluster manager, nothing uploaded",
                path.display(),
                self.binary.sha256()
            )
        } else {
            format!(
                "{what} {} (sha256 {}): uploaded {} bytes",
                path.display(),
                self.binary.sha256(),
                self.sent_bytes
            )
        }
    }
}

/// Names each of `paths` (`--files`) by its file name: each must be a
/// regular file, with a plain name no other of them has.
pub fn name_side_files(
    paths: &[std::path::PathBuf],
) -> Result<Vec<(String, std::path::PathBuf)>, String> {
    let mut named: Vec<(String, std::path::PathBuf)> = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("--files: cannot read {}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!(
                "--files: {} is not a regular file; give files, not directories",
                path.display()
            ));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        ember_actors::binaries::check_side_file_name(&name)
            .map_err(|e| format!("--files: {}: {e}", path.display()))?;
        if let Some((_, other)) = named.iter().find(|(n, _)| *n == name) {
            return Err(format!(
                "--files: {} and {} are both named '{name}', and side files are found by name; \
                 rename one",
                other.display(),
                path.display()
            ));
        }
        named.push((name, path.clone()));
    }
    Ok(named)
}

/// Uploads named side files (see [`name_side_files`]); the files as the
/// manager now holds them, and a line for each saying what was sent.
pub async fn upload_side_files(
    node: &Node,
    manager: &NodeId,
    files: &[(String, std::path::PathBuf)],
) -> Result<(Vec<SideFile>, Vec<String>), ClientError> {
    let mut held = Vec::new();
    let mut reports = Vec::new();
    for (name, path) in files {
        let uploaded = upload_side_file(node, manager, path).await?;
        reports.push(uploaded.report_as("side file", path));
        held.push(
            SideFile::new(name.clone(), uploaded.binary)
                .map_err(|e| ClientError::BadRequest(e.to_string()))?,
        );
    }
    Ok((held, reports))
}
