//! A worker's cache of application binaries, `WORK_DIR/binaries/<sha256>`:
//! a launch that names a binary runs it from there. The first launch that
//! needs one fetches it from the cluster manager (once, however many
//! launches wait for it meanwhile); it is kept only once its hash is
//! right, a copy kept by an earlier run of the worker is hashed again
//! before it is trusted, and before each launch the file must be a program
//! for this machine. A launch whose binary cannot be had fails the way a
//! launch that cannot start does: its exit, with the reason, goes to the
//! manager and on to the application.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::prelude::*;
use ember_transport::{ActorAddress, Node};

use super::{ChildExited, ChildKey, Launch, Worker};
use crate::binaries::{
    BinaryDir, BinaryError, BinaryRef, SideFile, check_runs_here, hash_file, receive,
};
use crate::cluster_manager::binaries::{FOR_FETCHES, FetchBinary, TRANSFER_IDLE};
use crate::remote::hub::BulkHub;

/// The bulk inbox binaries arrive at on a worker's node.
pub const BINARY_INBOX: &str = "worker/binaries";
/// How long the manager gets to send a whole binary.
const FETCH_TIMEOUT: Duration = Duration::from_secs(600);
/// The mode binaries are kept with: programs to run.
const PROGRAM_MODE: u32 = 0o755;

/// The binaries this worker holds and the launches waiting for one.
pub(super) struct BinaryCache {
    dir: PathBuf,
    /// Opened at first use: a worker that runs no binary creates nothing.
    store: Option<BinaryDir>,
    hub: Option<BulkHub>,
    /// Binaries checked against their hash since this worker started.
    verified: BTreeSet<String>,
    /// Launches waiting for a binary, by hash.
    waiting: BTreeMap<String, Vec<Launch>>,
}

impl BinaryCache {
    pub(super) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            store: None,
            hub: None,
            verified: BTreeSet::new(),
            waiting: BTreeMap::new(),
        }
    }

    /// Queues `launch` for `binary`; true if it is the first to wait for
    /// it (the one that starts the fetch).
    fn wait(&mut self, binary: &BinaryRef, launch: Launch) -> bool {
        let queue = self.waiting.entry(binary.sha256().to_string()).or_default();
        queue.push(launch);
        queue.len() == 1
    }

    /// The launches that waited for `binary`, in the order they came.
    fn take(&mut self, binary: &BinaryRef) -> Vec<Launch> {
        self.waiting.remove(binary.sha256()).unwrap_or_default()
    }

    /// Whether `blob` is in the store and was checked against its hash
    /// since this worker started.
    fn ready(&self, blob: &BinaryRef) -> bool {
        self.verified.contains(blob.sha256())
            && self.store.as_ref().is_some_and(|store| store.holds(blob))
    }

    /// Whether a launch of `key` waits for its binary.
    pub(super) fn is_waiting(&self, key: &ChildKey) -> bool {
        self.waiting.values().flatten().any(|l| l.key == *key)
    }

    /// Drops the waiting launch of `key`; whether there was one.
    fn cancel(&mut self, key: &ChildKey) -> bool {
        let mut found = false;
        for queue in self.waiting.values_mut() {
            let before = queue.len();
            queue.retain(|l| l.key != *key);
            found |= queue.len() != before;
        }
        found
    }

    /// The store and the inbox, opened the first time they are needed.
    fn open(&mut self, node: &Node) -> Result<(BinaryDir, BulkHub), BinaryError> {
        if self.store.is_none() {
            let store = BinaryDir::open(&self.dir, u64::MAX, PROGRAM_MODE).map_err(|e| {
                BinaryError::Io {
                    what: format!("cannot use {}", self.dir.display()),
                    why: e.to_string(),
                }
            })?;
            self.store = Some(store);
        }
        if self.hub.is_none() {
            let hub = BulkHub::open_expected_only(node, BINARY_INBOX)
                .map_err(|e| BinaryError::Refused(e.to_string()))?;
            self.hub = Some(hub);
        }
        match (&self.store, &self.hub) {
            (Some(store), Some(hub)) => Ok((store.clone(), hub.clone())),
            _ => Err(BinaryError::NoStore),
        }
    }
}

/// The binary a fetch waited for is here, or cannot be had.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct BinaryReady {
    binary: BinaryRef,
    kept: Result<PathBuf, BinaryError>,
}

impl Worker {
    /// Starts `launch` once its binary and side files are here. The first
    /// that is not is fetched (once, however many launches wait for it),
    /// and the launch is looked at again when it has come.
    pub(super) fn launch(&mut self, launch: Launch, ctx: &mut Context<Self>) {
        let missing = launch
            .binary
            .iter()
            .chain(launch.files.iter().map(SideFile::content))
            .find(|blob| !self.binaries.ready(blob))
            .cloned();
        let Some(binary) = missing else {
            self.start_ready(launch, ctx);
            return;
        };
        if !self.binaries.wait(&binary, launch) {
            return;
        }
        let opened = self.binaries.open(&self.spec.node);
        let manager = ActorAddress {
            node: self.spec.manager.node.clone(),
            name: FOR_FETCHES.to_string(),
        };
        let node = self.spec.node.clone();
        let wanted = binary.clone();
        let obtain = async move {
            let (store, hub) = opened?;
            match kept_copy(&store, &wanted).await {
                Some(path) => Ok(path),
                None => fetch(&node, manager, &store, &hub, &wanted).await,
            }
        };
        tracing::info!(%binary, "fetching an application binary or side file");
        ctx.spawn(
            obtain
                .into_actor(self)
                .map(move |kept, _act, ctx| ctx.notify(BinaryReady { binary, kept })),
        );
    }

    /// Starts `launch`, whose binary and side files are all here: the
    /// side files copied into its work dir, the binary checked to run here.
    fn start_ready(&mut self, launch: Launch, ctx: &mut Context<Self>) {
        let store = self.binaries.store.clone();
        let placed = match &store {
            Some(store) => place_files(store, &launch.dir, &launch.files),
            None if launch.files.is_empty() => Ok(()),
            None => Err("its side files are not here".to_string()),
        };
        if let Err(why) = placed {
            return Self::not_started(launch.key, format!("could not start: {why}"), ctx);
        }
        let binary = match (&launch.binary, &store) {
            (None, _) => None,
            (Some(binary), Some(store)) => {
                let path = store.path_of(binary);
                match check_runs_here(&path, binary) {
                    Ok(()) => Some(path),
                    Err(e) => {
                        return Self::not_started(launch.key, format!("could not start: {e}"), ctx);
                    }
                }
            }
            (Some(_), None) => {
                let why = "could not start: its application binary is not here".to_string();
                return Self::not_started(launch.key, why, ctx);
            }
        };
        self.start_child(launch, binary.as_deref(), ctx);
    }

    /// A launch killed while it waited for its binary never starts; its
    /// end is reported as any child's.
    pub(super) fn cancel_waiting(&mut self, key: ChildKey, ctx: &mut Context<Self>) {
        if self.binaries.cancel(&key) {
            ctx.notify(ChildExited {
                key,
                pid: 0,
                code: None,
                why: "killed while its application binary was on its way".to_string(),
            });
        }
    }
}

impl Handler<BinaryReady> for Worker {
    type Result = ();

    fn handle(&mut self, msg: BinaryReady, ctx: &mut Context<Self>) {
        match &msg.kept {
            Ok(_) => {
                tracing::info!(binary = %msg.binary, "application binary or side file ready");
                self.binaries
                    .verified
                    .insert(msg.binary.sha256().to_string());
                for launch in self.binaries.take(&msg.binary) {
                    self.launch(launch, ctx);
                }
            }
            Err(e) => {
                tracing::warn!(binary = %msg.binary, error = %e, "no application binary or side file");
                for launch in self.binaries.take(&msg.binary) {
                    let what = match launch.files.iter().find(|f| *f.content() == msg.binary) {
                        Some(file) => format!("its side file {}", file.name()),
                        None => "its application binary".to_string(),
                    };
                    let why = format!("could not start: {what} cannot be had: {e}");
                    Self::not_started(launch.key, why, ctx);
                }
            }
        }
    }
}

/// Copies `files` from `store` into `dir`, a child's work dir, each under
/// its own name: a copy, so a child that changes its file leaves the
/// kept one whole.
fn place_files(store: &BinaryDir, dir: &Path, files: &[SideFile]) -> Result<(), String> {
    if files.is_empty() {
        return Ok(());
    }
    crate::owner_only::create_dir(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for file in files {
        let to = dir.join(file.name());
        // A relaunch into the same dir finds the file of the run before.
        let _ = std::fs::remove_file(&to);
        std::fs::copy(store.path_of(file.content()), &to).map_err(|e| {
            format!(
                "cannot put side file {} in {}: {e}",
                file.name(),
                dir.display()
            )
        })?;
    }
    Ok(())
}

/// The copy of `binary` kept in `store` (by an earlier run of this
/// worker), if its hash is right; a wrong one is removed.
async fn kept_copy(store: &BinaryDir, binary: &BinaryRef) -> Option<PathBuf> {
    if !store.holds(binary) {
        return None;
    }
    let kept = store.path_of(binary);
    let path = kept.clone();
    let hashed = tokio::task::spawn_blocking(move || hash_file(&path)).await;
    if matches!(&hashed, Ok(Ok(found)) if found == binary) {
        return Some(kept);
    }
    tracing::warn!(%binary, "a kept application binary does not match its hash; fetching it again");
    let _ = std::fs::remove_file(&kept);
    None
}

/// Asks the manager for `binary` and keeps it once it arrived whole and
/// right.
async fn fetch(
    node: &Node,
    manager: ActorAddress,
    store: &BinaryDir,
    hub: &BulkHub,
    binary: &BinaryRef,
) -> Result<PathBuf, BinaryError> {
    let unreachable = |why: String| BinaryError::Interrupted {
        sha256: binary.sha256().to_string(),
        why,
    };
    let staged = store.stage(binary)?;
    let secret = crate::cluster_app::new_secret()
        .map_err(|e| unreachable(format!("cannot name the transfer: {e}")))?;
    let tag = format!("binary-{secret}");
    let arriving = hub.expect(&tag);
    let mailbox = node
        .mailbox::<FetchBinary>(&manager)
        .map_err(|e| unreachable(format!("cannot reach the cluster manager: {e}")))?;
    let request = FetchBinary {
        binary: binary.clone(),
        reply_to: ActorAddress {
            node: node.id().clone(),
            name: BINARY_INBOX.to_string(),
        },
        tag: tag.clone(),
    };
    let receiving = async {
        let batches = tokio::time::timeout(TRANSFER_IDLE, arriving)
            .await
            .map_err(|_| {
                unreachable(format!(
                    "it did not start to arrive within {TRANSFER_IDLE:?}"
                ))
            })?
            .map_err(|_| unreachable("the worker's binary inbox closed".into()))?;
        receive(staged, batches, TRANSFER_IDLE).await
    };
    tokio::pin!(receiving);
    let asked = tokio::select! {
        kept = &mut receiving => return kept,
        asked = mailbox.ask(request, FETCH_TIMEOUT) => asked,
    };
    match asked {
        Ok(Ok(())) => receiving.await,
        Ok(Err(e)) => {
            hub.forget(&tag);
            Err(e)
        }
        Err(e) => {
            hub.forget(&tag);
            Err(unreachable(format!(
                "the cluster manager did not send it: {e}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::child::{ChildSpec, NodeSpec};

    fn launch(executor: u32) -> Launch {
        let node = NodeSpec {
            certs: "/c".into(),
            cert_name: "w1".into(),
            instance: format!("app-1-{executor}"),
            host: "127.0.0.1".into(),
            conf: vec![],
        };
        Launch {
            key: ChildKey::Executor("app-1".into(), executor),
            args: vec![],
            dir: "/w/app-1".into(),
            spec: ChildSpec::Executor {
                node,
                app: "app-1".into(),
                executor,
                cores: 1,
                memory_mb: 512,
                driver: crate::remote::NodeContact {
                    node: ember_transport::NodeId("d".into()),
                    addr: "127.0.0.1:1".parse().unwrap(),
                    host: "127.0.0.1".into(),
                },
                secret: "s".into(),
            },
            cores: 1,
            memory_mb: 512,
            binary: None,
            files: vec![],
        }
    }

    #[test]
    fn launches_of_one_binary_wait_for_one_fetch() {
        let mut cache = BinaryCache::new("/nonexistent".into());
        let a = BinaryRef::new("a".repeat(64), 10).unwrap();
        let b = BinaryRef::new("b".repeat(64), 10).unwrap();
        assert!(cache.wait(&a, launch(0)), "the first starts the fetch");
        assert!(!cache.wait(&a, launch(1)), "the second waits for it");
        assert!(cache.wait(&b, launch(2)), "another binary, another fetch");
        assert!(cache.is_waiting(&ChildKey::Executor("app-1".into(), 1)));

        // A launch killed while waiting never starts.
        assert!(cache.cancel(&ChildKey::Executor("app-1".into(), 0)));
        assert!(!cache.cancel(&ChildKey::Executor("app-1".into(), 0)));
        let started: Vec<ChildKey> = cache.take(&a).into_iter().map(|l| l.key).collect();
        assert_eq!(started, vec![ChildKey::Executor("app-1".into(), 1)]);
        assert!(cache.take(&a).is_empty());
        // Once the fetch is over, the next launch fetches (or finds) anew.
        assert!(cache.wait(&a, launch(3)));
    }
}
